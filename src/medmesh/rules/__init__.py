"""Alert rules on committed readings and on the clock (stale devices, missed readings), the
alert lifecycle and escalation."""
