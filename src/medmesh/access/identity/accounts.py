"""Signing a person in: the password, then the TOTP code (or the TOTP enrolment staff must
finish first), with lockout and throttling. The web sign-in pages call these; they know
nothing of HTTP.

Refusals never say whether a username exists: an unknown username costs a hash verification
like a real one and locks like a real one (lockout.SignInThrottle).
"""

from __future__ import annotations

import asyncio
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from medmesh.access.identity import passwords, totp
from medmesh.access.identity.lockout import (
    LocalThrottle,
    LockoutPolicy,
    RedisSignInThrottle,
    SignInThrottle,
    Throttle,
)
from medmesh.access.identity.principals import Role
from medmesh.domain.errors import MedmeshError
from medmesh.store.database import Database
from medmesh.store.users import UserRecord, Users

STAFF = frozenset({Role.CLINICIAN, Role.ORG_ADMIN})
ROLES = frozenset({Role.PATIENT, Role.CLINICIAN, Role.ORG_ADMIN, Role.CAREGIVER})
# Accounts that must have a second factor before they finish signing in: staff, and
# caregivers (they read another person's record).
SECOND_FACTOR = STAFF | {Role.CAREGIVER}
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{2,99}")

WRONG_CREDENTIALS = "The username or password is not right."
WRONG_CODE = "This code is not right, or was used already. Enter the code your app shows now."


class SignInRefused(MedmeshError):
    """A sign-in step that failed; the message is for the person signing in."""


class AccountLocked(SignInRefused):
    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(
            f"Too many failed sign-ins. This account is locked until {_clock(until)}; "
            "ask your organisation's admin to unlock it sooner."
        )


class AddressThrottled(SignInRefused):
    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(
            f"Too many failed sign-ins from your network. Try again after {_clock(until)}."
        )


class InvalidUsername(MedmeshError):
    pass


class NextStep(StrEnum):
    DONE = "done"  # signed in
    CODE = "code"  # enter the TOTP code
    ENROL = "enrol"  # set up TOTP first (staff without it)


@dataclass(frozen=True, slots=True)
class Account:
    """Who signed in: what a session keeps (ids and a name, no health data)."""

    user_id: str
    username: str
    display_name: str
    role: Role
    organization_id: str
    patient_id: str | None
    session_epoch: int = 0  # a session made under an earlier epoch has ended


@dataclass(frozen=True, slots=True)
class PasswordAccepted:
    account: Account
    next: NextStep


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M UTC on %d %b %Y")


def normalise_username(username: str) -> str:
    return unicodedata.normalize("NFKC", username).strip().lower()


def check_username(username: str) -> str:
    """The username as stored, or InvalidUsername saying what is allowed."""
    name = normalise_username(username)
    if not _USERNAME.fullmatch(name):
        raise InvalidUsername(
            "a username has 3 to 100 characters: letters a-z, digits and . _ @ -, "
            "starting with a letter or digit"
        )
    return name


def account_of(record: UserRecord) -> Account:
    return Account(
        user_id=record.id,
        username=record.username,
        display_name=record.display_name,
        role=Role(record.role),
        organization_id=record.organization_id,
        patient_id=record.patient_id,
        session_epoch=record.session_epoch,
    )


def totp_active(record: UserRecord) -> bool:
    """Enrolled and confirmed: a secret pending confirmation has no last step yet."""
    return record.totp_secret is not None and record.totp_last_step is not None


def _locked_until(record: UserRecord, now: datetime) -> datetime | None:
    if record.locked_until is not None and record.locked_until > now:
        return record.locked_until
    return None


class SignIn:
    """The sign-in steps against one database, with the throttle counters of this process or,
    with `redis_url`, of every process sharing that Redis."""

    def __init__(
        self, database: Database, policy: LockoutPolicy, *, redis_url: str | None = None
    ) -> None:
        self._database = database
        self.policy = policy
        self.throttle: Throttle = (
            LocalThrottle(SignInThrottle(policy))
            if redis_url is None
            else RedisSignInThrottle(redis_url, policy)
        )

    async def _failed(self, record: UserRecord, address: str, now: datetime) -> None:
        """Count a failure against the account and the address; lock if it is time."""
        await self.throttle.address_failed(address, now)
        async with self._database.write() as conn:
            failures = await Users(conn).count_failure(record.id)
            until = self.policy.locked_until(failures, now)
            if until is not None:  # a lock ends the account's sessions too
                await Users(conn).end_sessions(record.id, locked_until=until)
        if until is not None:
            raise AccountLocked(until)

    async def password(
        self, username: str, password: str, *, address: str, now: datetime
    ) -> PasswordAccepted:
        blocked = await self.throttle.address_blocked_until(address, now)
        if blocked is not None:
            raise AddressThrottled(blocked)
        name = normalise_username(username)
        async with self._database.read() as conn:
            record = await Users(conn).find_by_username(name)
        if record is None or record.disabled:
            until = await self.throttle.phantom_locked_until(name, now)
            if until is not None:
                raise AccountLocked(until)
            await passwords.verify_password_async(passwords.dummy_hash(), password)
            await self.throttle.address_failed(address, now)
            await self.throttle.phantom_failed(name, now)
            until = await self.throttle.phantom_locked_until(name, now)
            raise AccountLocked(until) if until is not None else SignInRefused(WRONG_CREDENTIALS)
        until = _locked_until(record, now)
        if until is not None:
            raise AccountLocked(until)
        if not await passwords.verify_password_async(record.password_hash, password):
            await self._failed(record, address, now)
            raise SignInRefused(WRONG_CREDENTIALS)
        if passwords.needs_rehash(record.password_hash):
            fresh = await asyncio.to_thread(passwords.rehash, password)
            async with self._database.write() as conn:
                await Users(conn).update(record.id, password_hash=fresh)
        account = account_of(record)
        if totp_active(record):
            return PasswordAccepted(account, NextStep.CODE)
        if account.role in SECOND_FACTOR:
            return PasswordAccepted(account, NextStep.ENROL)
        async with self._database.write() as conn:
            await Users(conn).update(record.id, failed_logins=0, locked_until=None)
        return PasswordAccepted(account, NextStep.DONE)

    async def _usable(self, user_id: str, now: datetime) -> UserRecord:
        async with self._database.read() as conn:
            record = await Users(conn).get(user_id)
        if record is None or record.disabled:
            raise SignInRefused(WRONG_CREDENTIALS)
        until = _locked_until(record, now)
        if until is not None:
            raise AccountLocked(until)
        return record

    async def code(self, user_id: str, code: str, *, address: str, now: datetime) -> Account:
        """The second step: a TOTP code newer than the last one used."""
        blocked = await self.throttle.address_blocked_until(address, now)
        if blocked is not None:
            raise AddressThrottled(blocked)
        record = await self._usable(user_id, now)
        if record.totp_secret is None or record.totp_last_step is None:
            raise SignInRefused("Two-step sign-in is not set up for this account.")
        step = totp.accepted_step(record.totp_secret, code, at=now, last_step=record.totp_last_step)
        if step is not None:
            async with self._database.write() as conn:
                if await Users(conn).use_totp_step(record.id, step):
                    return account_of(record)
        await self._failed(record, address, now)
        raise SignInRefused(WRONG_CODE)

    async def enrolment(self, user_id: str, *, now: datetime) -> totp.Enrolment:
        """The secret to add to an authenticator app: the pending one if enrolment has begun
        (a reloaded page shows the same), a new one otherwise."""
        record = await self._usable(user_id, now)
        if totp_active(record):
            raise SignInRefused("Two-step sign-in is already set up for this account.")
        secret = record.totp_secret
        if secret is None:
            secret = totp.new_secret()
            async with self._database.write() as conn:
                await Users(conn).set_totp(record.id, secret, None)
        return totp.enrolment(secret, record.username)

    async def confirm_enrolment(
        self, user_id: str, code: str, *, address: str, now: datetime
    ) -> Account:
        """A first code from the app makes the secret active (and signs the person in)."""
        blocked = await self.throttle.address_blocked_until(address, now)
        if blocked is not None:
            raise AddressThrottled(blocked)
        record = await self._usable(user_id, now)
        if record.totp_secret is None or totp_active(record):
            raise SignInRefused("Start setting up two-step sign-in again.")
        step = totp.accepted_step(record.totp_secret, code, at=now, last_step=None)
        if step is not None:
            async with self._database.write() as conn:
                if await Users(conn).use_totp_step(record.id, step):
                    return account_of(record)
        await self._failed(record, address, now)
        raise SignInRefused(WRONG_CODE)
