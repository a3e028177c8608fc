"""Repositories for SMART App Launch: pending authorization requests, authorization codes and
refresh tokens. Codes and refresh tokens are kept as SHA-256 hashes only; a code is used once
and a refresh token rotated once, each decided by one conditional UPDATE so that two racing
requests cannot both succeed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from medmesh.store.schema import (
    api_tokens,
    oauth_authorization_codes,
    oauth_authorization_requests,
    oauth_refresh_tokens,
)


@dataclass(frozen=True, slots=True)
class AuthorizationRequestRecord:
    id: str
    client_id: str
    redirect_uri: str
    scope: str
    state: str
    code_challenge: str
    nonce: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuthorizationCodeRecord:
    code_hash: str
    grant_id: str
    client_id: str
    user_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    patient_id: str | None
    nonce: str | None
    expires_at: datetime
    used: bool


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    token_hash: str
    grant_id: str
    client_id: str
    user_id: str
    scope: str
    patient_id: str | None
    expires_at: datetime
    used: bool
    revoked: bool


class AuthorizationRequests:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, record: AuthorizationRequestRecord) -> None:
        await self._conn.execute(
            oauth_authorization_requests.insert().values(
                id=record.id,
                client_id=record.client_id,
                redirect_uri=record.redirect_uri,
                scope=record.scope,
                state=record.state,
                code_challenge=record.code_challenge,
                nonce=record.nonce,
                expires_at=record.expires_at,
            )
        )

    async def get(self, request_id: str, now: datetime) -> AuthorizationRequestRecord | None:
        """The request, unless it has expired."""
        query = select(oauth_authorization_requests).where(
            oauth_authorization_requests.c.id == request_id,
            oauth_authorization_requests.c.expires_at > now,
        )
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            return None
        return AuthorizationRequestRecord(**{k: row[k] for k in row.keys()})  # noqa: SIM118

    async def take(self, request_id: str) -> bool:
        """Remove the request (answered); False if another answer took it first."""
        result = await self._conn.execute(
            delete(oauth_authorization_requests).where(
                oauth_authorization_requests.c.id == request_id
            )
        )
        return bool(result.rowcount)

    async def forget_expired(self, now: datetime) -> None:
        await self._conn.execute(
            delete(oauth_authorization_requests).where(
                oauth_authorization_requests.c.expires_at <= now
            )
        )


def _code(row: RowMapping) -> AuthorizationCodeRecord:
    return AuthorizationCodeRecord(
        code_hash=row["code_hash"],
        grant_id=row["grant_id"],
        client_id=row["client_id"],
        user_id=row["user_id"],
        redirect_uri=row["redirect_uri"],
        scope=row["scope"],
        code_challenge=row["code_challenge"],
        patient_id=row["patient_id"],
        nonce=row["nonce"],
        expires_at=row["expires_at"],
        used=row["used_at"] is not None,
    )


class AuthorizationCodes:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, record: AuthorizationCodeRecord) -> None:
        await self._conn.execute(
            oauth_authorization_codes.insert().values(
                code_hash=record.code_hash,
                grant_id=record.grant_id,
                client_id=record.client_id,
                user_id=record.user_id,
                redirect_uri=record.redirect_uri,
                scope=record.scope,
                code_challenge=record.code_challenge,
                patient_id=record.patient_id,
                nonce=record.nonce,
                expires_at=record.expires_at,
            )
        )

    async def find(self, code_hash: str) -> AuthorizationCodeRecord | None:
        query = select(oauth_authorization_codes).where(
            oauth_authorization_codes.c.code_hash == code_hash
        )
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _code(row)

    async def use(self, code_hash: str, now: datetime, access_token_id: str) -> bool:
        """Mark the code used, naming the access token issued for it; False if used before."""
        result = await self._conn.execute(
            update(oauth_authorization_codes)
            .where(
                oauth_authorization_codes.c.code_hash == code_hash,
                oauth_authorization_codes.c.used_at.is_(None),
            )
            .values(used_at=now, access_token_id=access_token_id)
        )
        return bool(result.rowcount)

    async def forget_expired(self, now: datetime) -> None:
        """Codes past their life; a used one is kept as long, to detect a replay."""
        await self._conn.execute(
            delete(oauth_authorization_codes).where(oauth_authorization_codes.c.expires_at <= now)
        )


def _refresh(row: RowMapping) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        token_hash=row["token_hash"],
        grant_id=row["grant_id"],
        client_id=row["client_id"],
        user_id=row["user_id"],
        scope=row["scope"],
        patient_id=row["patient_id"],
        expires_at=row["expires_at"],
        used=row["used_at"] is not None,
        revoked=row["revoked_at"] is not None,
    )


class RefreshTokens:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self, record: RefreshTokenRecord, *, created_at: datetime, access_token_id: str
    ) -> None:
        await self._conn.execute(
            oauth_refresh_tokens.insert().values(
                token_hash=record.token_hash,
                grant_id=record.grant_id,
                client_id=record.client_id,
                user_id=record.user_id,
                scope=record.scope,
                patient_id=record.patient_id,
                created_at=created_at,
                expires_at=record.expires_at,
                access_token_id=access_token_id,
            )
        )

    async def find(self, token_hash: str) -> RefreshTokenRecord | None:
        query = select(oauth_refresh_tokens).where(oauth_refresh_tokens.c.token_hash == token_hash)
        row = (await self._conn.execute(query)).mappings().first()
        return None if row is None else _refresh(row)

    async def use(self, token_hash: str, now: datetime) -> bool:
        """Rotate: mark the token used; False if it was used or revoked before."""
        result = await self._conn.execute(
            update(oauth_refresh_tokens)
            .where(
                oauth_refresh_tokens.c.token_hash == token_hash,
                oauth_refresh_tokens.c.used_at.is_(None),
                oauth_refresh_tokens.c.revoked_at.is_(None),
            )
            .values(used_at=now)
        )
        return bool(result.rowcount)

    async def revoke_grant(self, grant_id: str, now: datetime) -> None:
        """End a grant: its refresh tokens and every access token issued with them or with
        its code (a replayed code or rotated refresh token means one of them leaked)."""
        issued = select(oauth_refresh_tokens.c.access_token_id).where(
            oauth_refresh_tokens.c.grant_id == grant_id
        )
        from_code = select(oauth_authorization_codes.c.access_token_id).where(
            oauth_authorization_codes.c.grant_id == grant_id
        )
        await self._conn.execute(
            update(api_tokens)
            .where(
                or_(api_tokens.c.id.in_(issued), api_tokens.c.id.in_(from_code)),
                api_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        await self._conn.execute(
            update(oauth_refresh_tokens)
            .where(
                oauth_refresh_tokens.c.grant_id == grant_id,
                oauth_refresh_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )

    async def forget_expired(self, now: datetime) -> None:
        await self._conn.execute(
            delete(oauth_refresh_tokens).where(oauth_refresh_tokens.c.expires_at <= now)
        )
