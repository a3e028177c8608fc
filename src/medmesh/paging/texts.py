"""What a page says: that alerts are waiting, how urgent, a link and a short code. Never who,
what or which value: a page may be read on a lock screen or by a chat service."""

from __future__ import annotations

from medmesh.domain.alerts import Severity

_WORD = {
    Severity.CRITICAL: "A critical",
    Severity.URGENT: "An urgent",
    Severity.WARNING: "An",
    Severity.INFO: "An",
}


def headline(severity: Severity, count: int, *, caregiver: bool = False) -> str:
    """A caregiver's page says "someone you care for" (they follow one person or a few)."""
    whom = "someone you care for" if caregiver else "one of your patients"
    if count == 1:
        return f"{_WORD[severity]} alert for {whom} is waiting"
    whose = "the people you care for" if caregiver else "your patients"
    return f"{count} alerts for {whose} are waiting (the highest is {severity.value})"


def page_text(
    severity: Severity, count: int, link: str, code: str, *, caregiver: bool = False
) -> tuple[str, str]:
    """Subject and body of a page."""
    first = headline(severity, count, caregiver=caregiver)
    privacy = "their" if caregiver else "your patients'"
    body = (
        f"{first}.\n\n"
        f"Open it (sign-in needed): {link}\n"
        f"Code: {code}\n\n"
        f"For {privacy} privacy this page says nothing more.\n"
    )
    return f"medmesh: {first.lower()}", body
