"""Repository for user accounts: patients, clinicians and organisation admins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.domain.errors import Conflict
from medmesh.store.database import cipher_of
from medmesh.store.schema import organizations, users

# Accounts are not patients: their TOTP secrets are sealed with a service key of the key store,
# owned by no patient (docs/accounts.md#two-step-sign-in), bound to the column and the user.
ACCOUNTS_OWNER = "platform:accounts"
_TOTP = "users.totp_secret_sealed"


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    organization_id: str
    username: str
    display_name: str
    role: str
    patient_id: str | None
    password_hash: str
    totp_secret: str | None
    totp_last_step: int | None
    failed_logins: int
    locked_until: datetime | None
    disabled: bool
    session_epoch: int = 0  # web sessions made under an earlier value have ended


def _user(row: RowMapping, totp_secret: str | None) -> UserRecord:
    return UserRecord(
        id=row["id"],
        organization_id=row["organization_id"],
        username=row["username"],
        display_name=row["display_name"],
        role=row["role"],
        patient_id=row["patient_id"],
        password_hash=row["password_hash"],
        totp_secret=totp_secret,
        totp_last_step=row["totp_last_step"],
        failed_logins=row["failed_logins"],
        locked_until=row["locked_until"],
        disabled=bool(row["disabled"]),
        session_epoch=int(row["session_epoch"]),
    )


class Users:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        *,
        user_id: str,
        organization_id: str,
        username: str,
        display_name: str,
        role: str,
        password_hash: str,
        patient_id: str | None = None,
    ) -> None:
        if await self.find_by_username(username) is not None:
            raise Conflict("this username is taken")
        await self._conn.execute(
            users.insert().values(
                id=user_id,
                organization_id=organization_id,
                username=username,
                display_name=display_name,
                role=role,
                patient_id=patient_id,
                password_hash=password_hash,
                created_at=datetime.now(UTC),
            )
        )

    async def _record(self, row: RowMapping | None) -> UserRecord | None:
        if row is None:
            return None
        sealed = row["totp_secret_sealed"]
        secret = None
        if sealed is not None:
            key = await cipher_of(self._conn).key_or_create(ACCOUNTS_OWNER)
            secret = key.open_text(bytes(sealed), _TOTP, row["id"])
        return _user(row, secret)

    async def get(self, user_id: str) -> UserRecord | None:
        rows = await self._conn.execute(select(users).where(users.c.id == user_id))
        return await self._record(rows.mappings().first())

    async def find_by_username(self, username: str) -> UserRecord | None:
        rows = await self._conn.execute(select(users).where(users.c.username == username))
        return await self._record(rows.mappings().first())

    async def set_totp(self, user_id: str, secret: str | None, last_step: int | None) -> None:
        """Set (sealed) or clear the account's TOTP secret and its last used step."""
        sealed = None
        if secret is not None:
            key = await cipher_of(self._conn).key_or_create(ACCOUNTS_OWNER)
            sealed = key.seal_text(secret, _TOTP, user_id)
        await self.update(user_id, totp_secret_sealed=sealed, totp_last_step=last_step)

    async def update(self, user_id: str, **values: object) -> None:
        """Set columns of one account (password hash, TOTP state, lockout counters…)."""
        await self._conn.execute(update(users).where(users.c.id == user_id).values(**values))

    async def end_sessions(self, user_id: str, **values: object) -> None:
        """End every web session of this account (raise its session epoch), setting `values`
        in the same statement."""
        await self._conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(session_epoch=users.c.session_epoch + 1, **values)
        )

    async def count_failure(self, user_id: str) -> int:
        """One more consecutive failed sign-in, counted in the database (two servers failing
        the same account at once both count); the new count."""
        await self._conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(failed_logins=users.c.failed_logins + 1)
        )
        found = await self._conn.execute(select(users.c.failed_logins).where(users.c.id == user_id))
        return int(found.scalar_one())

    async def use_totp_step(self, user_id: str, step: int) -> bool:
        """Record the step of a code just accepted, unless the same or a later step was used
        meanwhile (a replay racing the first use): False then."""
        last = users.c.totp_last_step
        result = await self._conn.execute(
            update(users)
            .where(users.c.id == user_id, (last.is_(None)) | (last < step))
            .values(totp_last_step=step, failed_logins=0, locked_until=None)
        )
        return result.rowcount == 1


class Organizations:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, organization_id: str, name: str) -> None:
        found = await self._conn.execute(
            select(organizations.c.id).where(organizations.c.id == organization_id)
        )
        if found.first() is not None:
            raise Conflict("an organisation with this id exists")
        await self._conn.execute(
            organizations.insert().values(
                id=organization_id, name=name, created_at=datetime.now(UTC)
            )
        )

    async def exists(self, organization_id: str) -> bool:
        return await self.name(organization_id) is not None

    async def name(self, organization_id: str) -> str | None:
        rows = await self._conn.execute(
            select(organizations.c.name).where(organizations.c.id == organization_id)
        )
        return rows.scalar_one_or_none()
