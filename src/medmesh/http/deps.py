"""The one way a route reaches the process's services: the composition root `provide`s each
service to the app once, and routes declare what they need in their signatures
(`database: DatabaseDep`), FastAPI's `Annotated` dependencies. Helpers that hold only the
request use the same lookups (`database_of(request)`).

Packages add aliases for their own services in the same way (`PrincipalDep` in
access/http.py, `PipelineDep` in ingest/http.py, …), each built with `provided`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar, cast

from fastapi import Depends, FastAPI, Request

from medmesh.config import Settings
from medmesh.events.bus import EventBus
from medmesh.store.database import Database

T = TypeVar("T")


def provide(app: FastAPI, kind: Any, value: object) -> None:
    """Make `value` the app's `kind` (a class or protocol) for every request."""
    if not hasattr(app.state, "provided"):
        app.state.provided = {}
    app.state.provided[kind] = value


def provided(kind: type[T]) -> Callable[[Request], T]:
    """The lookup of the app's `kind`, as a dependency or a plain call with the request."""

    def lookup(request: Request) -> T:
        services: dict[Any, object] = getattr(request.app.state, "provided", {})
        if kind not in services:
            raise LookupError(f"no {kind.__name__} was provided to this app")
        return cast(T, services[kind])

    lookup.__name__ = f"{kind.__name__.lower()}_of"
    return lookup


def provided_or_none(kind: type[T]) -> Callable[[Request], T | None]:
    """As `provided`, for a service a process may run without (the export runner)."""

    def lookup(request: Request) -> T | None:
        services: dict[Any, object] = getattr(request.app.state, "provided", {})
        return cast(T | None, services.get(kind))

    return lookup


class WallClock(Protocol):
    """Seconds since the epoch, as `time.time` gives them: the clock web sessions are measured
    by (tests provide a `medmesh.testing.ManualTimer` instead)."""

    def __call__(self) -> float: ...


database_of = provided(Database)
wall_clock_of = provided(WallClock)  # type: ignore[type-abstract]  # a protocol is a fine key
bus_of = provided(EventBus)  # type: ignore[type-abstract]  # a protocol is a fine key
settings_of = provided(Settings)

DatabaseDep = Annotated[Database, Depends(database_of)]
BusDep = Annotated[EventBus, Depends(bus_of)]
SettingsDep = Annotated[Settings, Depends(settings_of)]
