"""What the MLLP listener allows a sender: which addresses, how many connections, how long
to wait for a message, and how much memory partial messages may hold (docs/hl7.md).

MLLP has no login of its own; these limits and TLS client certificates are its defences.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


def parse_networks(specs: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Addresses or networks (`10.1.2.3`, `10.1.2.0/24`, `::1`); ValueError names a bad one."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {spec.strip()[:64]!r}") from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class MllpLimits:
    allowed_senders: tuple[IPNetwork, ...] = parse_networks(LOOPBACK)
    idle_timeout: float = 300.0  # seconds without a message in progress
    read_timeout: float = 30.0  # seconds from a message's first byte to its end
    max_connections: int = 100
    max_connections_per_address: int = 10
    max_buffered_bytes: int = 32 * 1_048_576  # partial messages of all connections together

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.allowed_senders)


@dataclass(slots=True)
class Admission:
    """Open connections per sender address and bytes held in partial messages, server-wide."""

    limits: MllpLimits
    by_address: Counter[str] = field(default_factory=Counter)
    buffered: int = 0

    def admit(self, address: str) -> str | None:
        """Count a new connection in; or say why it is refused (then it is not counted)."""
        if not self.limits.allows(address):
            return "sender address is not allowed (MEDMESH_MLLP_ALLOWED_SENDERS)"
        if sum(self.by_address.values()) >= self.limits.max_connections:
            return "too many connections (MEDMESH_MLLP_MAX_CONNECTIONS)"
        if self.by_address[address] >= self.limits.max_connections_per_address:
            return (
                "too many connections from one address (MEDMESH_MLLP_MAX_CONNECTIONS_PER_ADDRESS)"
            )
        self.by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]

    def reserve(self, size: int) -> bool:
        """Take `size` more bytes of partial-message memory, if the server-wide cap allows."""
        if self.buffered + size > self.limits.max_buffered_bytes:
            return False
        self.buffered += size
        return True

    def free(self, size: int) -> None:
        self.buffered -= size
