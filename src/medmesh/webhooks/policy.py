"""How webhooks are sent: time limits, retries and concurrency (from Settings)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

RETRY_JITTER = 0.2  # each retry delay is spread ±20 % so failed deliveries do not retry in step


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    timeout_seconds: float = 10.0  # one POST, from connecting to the response status
    max_attempts: int = 6
    retry_seconds: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 3600.0)  # the last repeats
    failures_before_error: int = 5  # failed deliveries in a row that put a subscription in error
    concurrency: int = 16  # POSTs in flight per process
    per_subscription: int = 2  # of which at most this many to one subscription
    poll_seconds: float = 1.0  # how often to look for deliveries queued by other processes
    ca_file: str | None = None  # extra CA certificates trusted for receivers (private CAs)

    def retry_delay(self, attempts: int, spread: float) -> timedelta:
        """The wait after the `attempts`-th failed attempt; `spread` in [0, 1) picks the jitter."""
        base = self.retry_seconds[min(attempts, len(self.retry_seconds)) - 1]
        return timedelta(seconds=base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * spread))

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery stays with its sender before another may retry it."""
        return timedelta(seconds=self.timeout_seconds + 30)
