"""Browser sessions and OAuth states: issued here, kept server side, checked on every use.

The cookie value is 256 random bits; the database holds only its keyed hash, so
a leaked database yields no usable cookie. The user UUID is sealed to its row.
A state is 256 random bits, opaque, stored by keyed hash with the session,
provider, context and PKCE verifier it was issued for, and consumed exactly once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .crypto import SESSION_ID, STATE, Keyring, random_token
from .errors import InvalidState, SealError
from .store.base import SessionRow, StateRow, Store

TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)


@dataclass
class Session:
    id_hash: str
    user_uuid: str | None
    created_at: float
    expires_at: float


@dataclass
class StatePayload:
    context: dict[str, Any]
    code_verifier: str | None


class SessionManager:
    def __init__(
        self, store: Store, keyring: Keyring, ttl: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.ttl = ttl
        self.clock = clock

    async def resolve(self, cookie: str | None) -> Session | None:
        """The live session this cookie names; a made-up, expired or unreadable one is no session."""
        if not cookie or not TOKEN_FORMAT.fullmatch(cookie):
            return None
        row = await self.store.get_session(self.keyring.digests(SESSION_ID, cookie), self.clock())
        if row is None:
            return None
        user = None
        if row.user_sealed:
            try:
                user = self.keyring.open(f"session:{row.id_hash}", row.user_sealed)
            except SealError:
                return None
        return Session(row.id_hash, user, row.created_at, row.expires_at)

    def _new_row(self, user_uuid: str | None) -> tuple[str, SessionRow]:
        cookie = random_token(32)
        id_hash = self.keyring.digest(SESSION_ID, cookie)
        sealed = self.keyring.seal(f"session:{id_hash}", user_uuid) if user_uuid else None
        now = self.clock()
        return cookie, SessionRow(id_hash, sealed, now, now + self.ttl)

    async def create(self, user_uuid: str | None = None) -> tuple[str, Session]:
        cookie, row = self._new_row(user_uuid)
        await self.store.insert_session(row)
        return cookie, Session(row.id_hash, user_uuid, row.created_at, row.expires_at)

    async def rotate(self, old: Session | None, user_uuid: str | None) -> tuple[str, Session]:
        """A new cookie for the same person; the old row goes in the same transaction (fixation)."""
        cookie, row = self._new_row(user_uuid)
        await self.store.replace_session(old.id_hash if old else None, row)
        return cookie, Session(row.id_hash, user_uuid, row.created_at, row.expires_at)

    async def end(self, session: Session | None) -> None:
        if session is not None:
            await self.store.replace_session(session.id_hash, None)


class StateManager:
    def __init__(
        self, store: Store, keyring: Keyring, ttl: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.keyring = keyring
        self.ttl = ttl
        self.clock = clock

    async def issue(
        self, session: Session, provider: str, context: dict[str, Any], verifier: str | None
    ) -> str:
        state = random_token(32)
        state_hash = self.keyring.digest(STATE, state)
        payload = self.keyring.seal(f"state:{state_hash}", {"context": context, "verifier": verifier})
        now = self.clock()
        await self.store.insert_state(
            StateRow(state_hash, session.id_hash, provider, payload, now, now + self.ttl)
        )
        return state

    async def consume(self, state: str | None, session: Session | None, provider: str) -> StatePayload:
        """Spend the state once; refuse it unless it is live and was issued to this session for this provider.

        The format is checked before any lookup, so garbage never reaches the database.
        A state presented by the wrong browser or at the wrong provider is spent all the
        same: it has leaked, and the flow it belonged to must start again.
        """
        if not state or not TOKEN_FORMAT.fullmatch(state):
            raise InvalidState()
        row = await self.store.consume_state(self.keyring.digests(STATE, state))
        if row is None or row.expires_at <= self.clock():
            raise InvalidState()
        if session is None or row.session_hash != session.id_hash or row.provider != provider:
            raise InvalidState()
        try:
            payload = self.keyring.open(f"state:{row.state_hash}", row.payload_sealed)
        except SealError:
            raise InvalidState() from None
        return StatePayload(dict(payload.get("context") or {}), payload.get("verifier"))
