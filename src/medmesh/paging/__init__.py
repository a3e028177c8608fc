"""Paging: alerts that reach people off-screen. Each person's channels in order (e-mail,
apprise URLs), on-call rosters, escalation chains, grouped pages that carry no health data,
and acknowledgement from the page's link (docs/paging.md)."""
