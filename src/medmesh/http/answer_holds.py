"""Work an answer must wait for, done while the route works: the audit record of an access.

A permitted access's audit record must be durable before the answer leaves (docs/audit.md).
Writing it before the work puts a commit (an fsync) in front of every audited read; instead
the route hands the write to `hold_answer` and goes on, and `AnswerHolds` holds the
response's first message until every held write has finished. A failed write fails the request
(the answer is never sent; `UnexpectedErrors` answers 500), as it did when awaited in place.

Once the response has started (a stream), or outside `AnswerHolds`, `hold_answer` waits in
place: nothing is ever sent ahead of its record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SCOPE_KEY = "medmesh.answer_holds"


class _Holds:
    """One request's held work, and whether its response has started."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[Any]] = []
        self.started = False

    async def release(self) -> None:
        """Wait for every held piece of work; raise the first failure."""
        pending, self.pending = self.pending, []
        if pending:
            await asyncio.gather(*pending)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Take a finished future's exception, so one nobody awaited is not reported as lost."""
    if not future.cancelled():
        future.exception()


async def hold_answer(connection: HTTPConnection, work: Awaitable[Any]) -> None:
    """Run `work` beside the route; the response's first message waits for it.

    Waits in place when the response has already started or `AnswerHolds` is not installed.
    The work runs to its end even if the client goes away (an access that happened is
    recorded).
    """
    holds = connection.scope.get(_SCOPE_KEY)
    if not isinstance(holds, _Holds) or holds.started:
        await work
        return
    task = asyncio.ensure_future(work)
    task.add_done_callback(_retrieve)
    holds.pending.append(task)


class AnswerHolds:
    """ASGI middleware: the response's start waits for the request's held work."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        holds = _Holds()
        scope[_SCOPE_KEY] = holds

        async def held_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                await holds.release()
                holds.started = True
            await send(message)

        await self.app(scope, receive, held_send)
