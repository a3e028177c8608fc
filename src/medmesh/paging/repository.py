"""SQL for paging: channels, pages with their alerts and deliveries, snoozes, rosters."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.alerts import Severity
from medmesh.paging.channels import Channel, ChannelKind
from medmesh.paging.rosters import Shift, ShiftKind, Team
from medmesh.store.database import cipher_of
from medmesh.store.schema import (
    alert_snoozes,
    oncall_shifts,
    oncall_teams,
    page_alerts,
    page_deliveries,
    pages,
    paging_channels,
    users,
)

SENDING = "sending"  # claimed by one process, going out now
HELD, SENT, FAILED, ACKNOWLEDGED, ESCALATED, CLOSED = (
    "held",
    "sent",
    "failed",
    "acknowledged",
    "escalated",
    "closed",
)
_REASON = "alert_snoozes.reason"


@dataclass(frozen=True, slots=True)
class Page:
    id: str
    recipient_id: str
    level: int
    severity: Severity
    status: str
    due_at: datetime
    created_at: datetime
    sent_at: datetime | None
    escalate_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledged_via: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    page_id: str
    channel_kind: str
    outcome: str
    error: str | None
    attempted_at: datetime
    code_expires_at: datetime | None
    code_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class Snooze:
    alert_id: str
    until: datetime
    severity: Severity
    reason: str
    snoozed_by: str


def _page(row: object) -> Page:
    r = row._mapping  # type: ignore[attr-defined]
    return Page(
        r["id"],
        r["recipient_id"],
        r["level"],
        Severity(r["severity"]),
        r["status"],
        r["due_at"],
        r["created_at"],
        r["sent_at"],
        r["escalate_at"],
        r["acknowledged_at"],
        r["acknowledged_by"],
        r["acknowledged_via"],
    )


class Channels:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def of(self, user_id: str) -> list[Channel]:
        rows = await self._conn.execute(
            select(paging_channels)
            .where(paging_channels.c.user_id == user_id)
            .order_by(paging_channels.c.position, paging_channels.c.created_at)
        )
        return [
            Channel(
                r.id, r.user_id, r.position, ChannelKind(r.kind), r.target, r.label, r.created_at
            )
            for r in rows
        ]

    async def add(
        self, user_id: str, kind: ChannelKind, target: str, label: str, at: datetime
    ) -> Channel:
        last = (
            await self._conn.execute(
                select(func.max(paging_channels.c.position)).where(
                    paging_channels.c.user_id == user_id
                )
            )
        ).scalar_one_or_none()
        channel = Channel(str(uuid.uuid4()), user_id, (last or 0) + 1, kind, target, label, at)
        await self._conn.execute(
            paging_channels.insert().values(
                id=channel.id,
                user_id=user_id,
                position=channel.position,
                kind=kind.value,
                target=target,
                label=label,
                created_at=at,
            )
        )
        return channel

    async def remove(self, user_id: str, channel_id: str) -> bool:
        result = await self._conn.execute(
            delete(paging_channels).where(
                paging_channels.c.id == channel_id, paging_channels.c.user_id == user_id
            )
        )
        return bool(result.rowcount)

    async def reorder(self, user_id: str, channel_ids: Sequence[str]) -> None:
        for position, channel_id in enumerate(channel_ids, start=1):
            await self._conn.execute(
                update(paging_channels)
                .where(paging_channels.c.id == channel_id, paging_channels.c.user_id == user_id)
                .values(position=position)
            )


class Pages:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, page_id: str) -> Page | None:
        row = (await self._conn.execute(select(pages).where(pages.c.id == page_id))).first()
        return None if row is None else _page(row)

    async def open_for(self, recipient_id: str, level: int) -> Page | None:
        """The recipient's page at this level that new alerts may join: one still held, or
        one sent and not yet acknowledged or escalated (its escalation covers them)."""
        row = (
            await self._conn.execute(
                select(pages)
                .where(
                    pages.c.recipient_id == recipient_id,
                    pages.c.level == level,
                    pages.c.status.in_((HELD, SENDING, SENT)),
                )
                .order_by(pages.c.created_at.desc())
                .limit(1)
            )
        ).first()
        return None if row is None else _page(row)

    async def create(
        self, recipient_id: str, level: int, severity: Severity, due_at: datetime, at: datetime
    ) -> Page:
        page_id = str(uuid.uuid4())
        await self._conn.execute(
            pages.insert().values(
                id=page_id,
                recipient_id=recipient_id,
                level=level,
                severity=severity.value,
                status=HELD,
                due_at=due_at,
                created_at=at,
            )
        )
        found = await self.get(page_id)
        assert found is not None
        return found

    async def attach(self, page: Page, alert_id: str, patient_id: str, severity: Severity) -> None:
        known = await self._conn.execute(
            select(page_alerts.c.alert_id).where(
                page_alerts.c.page_id == page.id, page_alerts.c.alert_id == alert_id
            )
        )
        if known.first() is None:
            await self._conn.execute(
                page_alerts.insert().values(
                    page_id=page.id, alert_id=alert_id, patient_id=patient_id
                )
            )
        if severity.rank > page.severity.rank:
            await self._conn.execute(
                update(pages).where(pages.c.id == page.id).values(severity=severity.value)
            )

    async def times_paged(self, alert_id: str) -> tuple[int, Severity | None]:
        """How many pages announced the alert, and the highest severity they announced."""
        rows = (
            await self._conn.execute(
                select(pages.c.severity)
                .join(page_alerts, page_alerts.c.page_id == pages.c.id)
                .where(page_alerts.c.alert_id == alert_id, pages.c.level == 0)
            )
        ).all()
        if not rows:
            return 0, None
        return len(rows), max((Severity(r.severity) for r in rows), key=lambda s: s.rank)

    async def alert_ids(self, page_id: str) -> list[str]:
        rows = await self._conn.execute(
            select(page_alerts.c.alert_id).where(page_alerts.c.page_id == page_id)
        )
        return [r.alert_id for r in rows]

    async def due(self, now: datetime, limit: int = 100) -> list[Page]:
        rows = await self._conn.execute(
            select(pages)
            .where(pages.c.status == HELD, pages.c.due_at <= now)
            .order_by(pages.c.due_at)
            .limit(limit)
        )
        return [_page(r) for r in rows]

    async def overdue(self, now: datetime, limit: int = 100) -> list[Page]:
        rows = await self._conn.execute(
            select(pages)
            .where(pages.c.status.in_((SENT, FAILED)), pages.c.escalate_at <= now)
            .order_by(pages.c.escalate_at)
            .limit(limit)
        )
        return [_page(r) for r in rows]

    async def set_status(
        self, page_id: str, status: str, *, expected: str | None = None, **values: object
    ) -> bool:
        statement = update(pages).where(pages.c.id == page_id)
        if expected is not None:
            statement = statement.where(pages.c.status == expected)
        result = await self._conn.execute(statement.values(status=status, **values))
        return bool(result.rowcount)

    async def bring_forward(self, page_id: str, due_at: datetime) -> None:
        """A held page goes out by `due_at` at the latest (a critical alert joined a page
        that quiet hours were holding)."""
        await self._conn.execute(
            update(pages)
            .where(pages.c.id == page_id, pages.c.status == HELD, pages.c.due_at > due_at)
            .values(due_at=due_at)
        )

    async def reschedule(self, page_id: str, due_at: datetime) -> None:
        await self._conn.execute(
            update(pages)
            .where(pages.c.id == page_id, pages.c.status == SENDING)
            .values(due_at=due_at, status=HELD)
        )

    async def close_for_alerts(self, alert_ids: Sequence[str], except_page: str) -> None:
        """Pages that announced these alerts stop escalating (someone acknowledged)."""
        theirs = select(page_alerts.c.page_id).where(page_alerts.c.alert_id.in_(alert_ids))
        await self._conn.execute(
            update(pages)
            .where(
                pages.c.id.in_(theirs),
                pages.c.id != except_page,
                pages.c.status.in_((HELD, SENDING, SENT, FAILED)),
            )
            .values(status=CLOSED)
        )

    async def record_delivery(
        self,
        page_id: str,
        channel: Channel | None,
        kind: str,
        outcome: str,
        error: str | None,
        at: datetime,
        code_hash: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        await self._conn.execute(
            page_deliveries.insert().values(
                id=str(uuid.uuid4()),
                page_id=page_id,
                channel_id=channel.id if channel else None,
                channel_kind=kind,
                outcome=outcome,
                error=error,
                attempted_at=at,
                code_hash=code_hash,
                code_expires_at=expires_at,
            )
        )

    async def deliveries(self, page_id: str) -> list[Delivery]:
        rows = await self._conn.execute(
            select(page_deliveries)
            .where(page_deliveries.c.page_id == page_id)
            .order_by(page_deliveries.c.attempted_at)
        )
        return [
            Delivery(
                r.id,
                r.page_id,
                r.channel_kind,
                r.outcome,
                r.error,
                r.attempted_at,
                r.code_expires_at,
                r.code_used_at,
            )
            for r in rows
        ]

    async def by_code(self, code_hash: str) -> tuple[Page, Delivery] | None:
        row = (
            await self._conn.execute(
                select(page_deliveries).where(page_deliveries.c.code_hash == code_hash)
            )
        ).first()
        if row is None:
            return None
        page = await self.get(row.page_id)
        if page is None:
            return None
        delivery = Delivery(
            row.id,
            row.page_id,
            row.channel_kind,
            row.outcome,
            row.error,
            row.attempted_at,
            row.code_expires_at,
            row.code_used_at,
        )
        return page, delivery

    async def use_code(self, delivery_id: str, at: datetime) -> bool:
        """Mark the link used; False if it was used already (a second click does nothing)."""
        result = await self._conn.execute(
            update(page_deliveries)
            .where(page_deliveries.c.id == delivery_id, page_deliveries.c.code_used_at.is_(None))
            .values(code_used_at=at)
        )
        return bool(result.rowcount)

    async def history(self, recipient_id: str) -> list[Page]:
        rows = await self._conn.execute(
            select(pages).where(pages.c.recipient_id == recipient_id).order_by(pages.c.created_at)
        )
        return [_page(r) for r in rows]


class Snoozes:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, alert_id: str) -> Snooze | None:
        row = (
            await self._conn.execute(
                select(alert_snoozes).where(alert_snoozes.c.alert_id == alert_id)
            )
        ).first()
        if row is None:
            return None
        key = await cipher_of(self._conn).key(row.patient_id)
        reason = key.open_text(row.reason, _REASON, alert_id)
        return Snooze(alert_id, row.until, Severity(row.severity), reason, row.snoozed_by)

    async def set(
        self,
        alert_id: str,
        patient_id: str,
        until: datetime,
        severity: Severity,
        reason: str,
        who: str,
        at: datetime,
    ) -> None:
        key = await cipher_of(self._conn).key(patient_id)
        await self._conn.execute(delete(alert_snoozes).where(alert_snoozes.c.alert_id == alert_id))
        await self._conn.execute(
            alert_snoozes.insert().values(
                alert_id=alert_id,
                patient_id=patient_id,
                until=until,
                severity=severity.value,
                reason=key.seal_text(reason, _REASON, alert_id),
                snoozed_by=who,
                snoozed_at=at,
            )
        )

    async def ended(self, now: datetime) -> list[str]:
        """Alerts whose snooze is over."""
        rows = await self._conn.execute(
            select(alert_snoozes.c.alert_id).where(alert_snoozes.c.until <= now)
        )
        return [r.alert_id for r in rows]

    async def clear(self, alert_id: str) -> None:
        await self._conn.execute(delete(alert_snoozes).where(alert_snoozes.c.alert_id == alert_id))


def _clock(text: str | None) -> time | None:
    return None if text is None else time.fromisoformat(text)


class Rosters:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def teams(self, organization_id: str) -> list[Team]:
        rows = (
            await self._conn.execute(
                select(oncall_teams)
                .where(oncall_teams.c.organization_id == organization_id)
                .order_by(oncall_teams.c.name)
            )
        ).all()
        return [await self._team(r) for r in rows]

    async def team(self, organization_id: str, name: str) -> Team | None:
        row = (
            await self._conn.execute(
                select(oncall_teams).where(
                    oncall_teams.c.organization_id == organization_id, oncall_teams.c.name == name
                )
            )
        ).first()
        return None if row is None else await self._team(row)

    async def staff(self, organization_id: str) -> dict[str, str]:
        """Staff accounts of the organisation that can be on call: id → display name."""
        rows = await self._conn.execute(
            select(users.c.id, users.c.display_name)
            .where(
                users.c.organization_id == organization_id,
                users.c.role == "clinician",
                users.c.disabled.is_(False),
            )
            .order_by(users.c.display_name)
        )
        return {r.id: r.display_name for r in rows}

    async def team_by_id(self, team_id: str) -> Team | None:
        row = (
            await self._conn.execute(select(oncall_teams).where(oncall_teams.c.id == team_id))
        ).first()
        return None if row is None else await self._team(row)

    async def _team(self, row: object) -> Team:
        r = row._mapping  # type: ignore[attr-defined]
        shifts = await self._conn.execute(
            select(oncall_shifts).where(oncall_shifts.c.team_id == r["id"])
        )
        return Team(
            r["id"],
            r["organization_id"],
            r["name"],
            r["timezone"],
            r["lead_id"],
            r["fallback_id"],
            tuple(
                Shift(
                    s.user_id,
                    ShiftKind(s.kind),
                    s.weekday,
                    _clock(s.start_time),
                    _clock(s.end_time),
                    s.starts_at,
                    s.ends_at,
                )
                for s in shifts
            ),
        )

    async def save(self, team: Team, who: str, at: datetime) -> Team:
        """Create or replace the team and its whole roster."""
        existing = await self.team(team.organization_id, team.name)
        team_id = existing.id if existing else str(uuid.uuid4())
        values = {
            "timezone": team.timezone,
            "lead_id": team.lead_id,
            "fallback_id": team.fallback_id,
            "updated_at": at,
            "updated_by": who,
        }
        if existing is None:
            await self._conn.execute(
                oncall_teams.insert().values(
                    id=team_id, organization_id=team.organization_id, name=team.name, **values
                )
            )
        else:
            await self._conn.execute(
                update(oncall_teams).where(oncall_teams.c.id == team_id).values(values)
            )
            await self._conn.execute(
                delete(oncall_shifts).where(oncall_shifts.c.team_id == team_id)
            )
        for shift in team.shifts:
            await self._conn.execute(
                oncall_shifts.insert().values(
                    id=str(uuid.uuid4()),
                    team_id=team_id,
                    user_id=shift.user_id,
                    kind=shift.kind.value,
                    weekday=shift.weekday,
                    start_time=shift.start.isoformat("minutes") if shift.start else None,
                    end_time=shift.end.isoformat("minutes") if shift.end else None,
                    starts_at=shift.starts_at,
                    ends_at=shift.ends_at,
                )
            )
        saved = await self.team_by_id(team_id)
        assert saved is not None
        return saved
