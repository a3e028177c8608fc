"""A person's paging channels and how a page goes out on each: e-mail over SMTP (aiosmtplib),
or any service apprise reaches by URL (ntfy, Pushover, Slack, Teams, PagerDuty, Twilio,
JSON/form webhooks…). A target is checked when saved, so a typo is refused then, not at 3 a.m."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from enum import StrEnum

import aiosmtplib
import apprise

from medmesh.domain.errors import InvalidRequest

_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}")


class ChannelKind(StrEnum):
    EMAIL = "email"
    APPRISE = "apprise"


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    user_id: str
    position: int
    kind: ChannelKind
    target: str
    label: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0


class DeliveryFailed(Exception):
    """A channel did not take the page; the reason is a type name, never a message text."""


def checked_target(kind: ChannelKind, target: str) -> str:
    """The target, trimmed, if it can carry pages; else InvalidRequest saying why."""
    value = target.strip()
    if kind is ChannelKind.EMAIL:
        if not _EMAIL.fullmatch(value):
            raise InvalidRequest("target is not an e-mail address")
        return value
    if apprise.Apprise.instantiate(value) is None:
        raise InvalidRequest(
            "target is not a notification URL apprise understands "
            "(e.g. ntfy://topic, json://host/path, pover://user@token)"
        )
    return value


def described(channel: Channel) -> str:
    """What the person sees in the list: an e-mail address, or a URL's scheme and host only
    (apprise URLs carry tokens)."""
    if channel.kind is ChannelKind.EMAIL:
        return channel.target
    scheme, _, rest = channel.target.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"


async def deliver(channel: Channel, subject: str, body: str, smtp: SmtpServer | None) -> None:
    """Send one page on one channel; DeliveryFailed if it did not go."""
    if channel.kind is ChannelKind.EMAIL:
        if smtp is None:
            raise DeliveryFailed("NoSmtpServer")
        message = EmailMessage()
        message["From"] = smtp.sender
        message["To"] = channel.target
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                start_tls=smtp.starttls,
                timeout=smtp.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryFailed(type(exc).__name__) from None
        return
    sender = apprise.Apprise()
    if not sender.add(channel.target):
        raise DeliveryFailed("InvalidUrl")
    if not await sender.async_notify(body=body, title=subject):
        raise DeliveryFailed("NotDelivered")
