"""paho-mqtt's MQTT 5 `Properties`, without rebuilding their lookup tables for every packet.

paho-mqtt 2.2 builds three tables (the property names, their wire types and the packets each
one may appear in) anew in `Properties.__init__`, and it builds a `Properties` for every MQTT 5
PUBLISH it receives. In the ingest worker taking single-reading messages that was a quarter of
its CPU (docs/benchmarks.md, 2026-12-05). paho only ever reads those tables, so every
`Properties` can share one copy of them, built once by paho's own `__init__`; and `clear`
(which `unpack` calls first) can look the names up in a set made once from them instead of
respelling every name for every packet. That is all `share_property_tables` changes. It
applies to the paho-mqtt version it was checked against and leaves any other as it is
(slower, not wrong); a unit test fails when the pin moves, so the check is made again.
"""

from __future__ import annotations

import importlib.metadata

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

CHECKED_VERSION = "2.2.0"
_TABLES = ("types", "names", "properties")

_original_init = Properties.__init__
_original_clear = Properties.clear


def share_property_tables(version: str | None = None) -> bool:
    """Make every paho `Properties` share one copy of its tables; True if they now do.

    `version` is the installed paho-mqtt's unless given (tests give another)."""
    if Properties.__init__ is not _original_init:
        return True
    if (version or importlib.metadata.version("paho-mqtt")) != CHECKED_VERSION:
        return False
    model = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    shared = {name: getattr(model, name) for name in _TABLES}

    def __init__(self: Properties, packet_type: int) -> None:
        # object.__setattr__: paho's own __setattr__ checks every name against its tables.
        object.__setattr__(self, "packetType", packet_type)
        for name, table in shared.items():
            object.__setattr__(self, name, table)

    names = frozenset(name.replace(" ", "") for name in shared["names"])

    def clear(self: Properties) -> None:
        for name in [attribute for attribute in vars(self) if attribute in names]:
            delattr(self, name)

    Properties.__init__ = __init__  # type: ignore[method-assign]
    Properties.clear = clear  # type: ignore[method-assign]
    return True
