"""The connect use-case: start a flow (session, state, PKCE) and complete it (verify, exchange, save).

Handlers call `Linker.start` and `Linker.complete` and turn the results into
responses; everything between the browser and the store is decided here, in
the order SECURITY.md asks: the platform's signature first, then the state,
then the platform's own error, then the code.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .crypto import USER_INDEX, Keyring, pkce_pair
from .errors import AccessDenied, BadRequest, ProviderError, SessionRequired
from .events import Events, info_from_row
from .provider import Account, Args, Callback
from .registry import Registry
from .sessions import SessionManager, StateManager
from .store.base import ConnectionWrite, Store, UserRow

MAX_CODE_LENGTH = 2048


@dataclass
class LoginStart:
    redirect_url: str
    new_cookie: str | None  # set when a session was created for this flow


@dataclass
class LinkCompleted:
    user_uuid: str
    provider: str
    accounts: list[dict[str, Any]]
    new_cookie: str | None  # the rotated session cookie; None when the session ended
    session_ended: bool
    created_user: bool = False
    removed: list[str] = field(default_factory=list)


def connection_write(provider: str, account: Account, keyring: Keyring) -> ConnectionWrite:
    """Seal an account's tokens and profile for storage, bound to (provider, account id)."""
    row_key = f"connection:{provider}:{account.id}"
    tokens = account.tokens
    return ConnectionWrite(
        provider=provider,
        account_id=account.id,
        name=account.name,
        kind=account.kind,
        tokens_sealed=keyring.seal(row_key, tokens.to_json()) if tokens else None,
        profile_sealed=keyring.seal(row_key + ":profile", account.profile) if account.profile else None,
        scopes=",".join(tokens.scopes) if tokens else "",
        expires_at=tokens.expires_at if tokens else None,
        refresh_expires_at=tokens.refresh_expires_at if tokens else None,
        children=[connection_write(provider, child, keyring) for child in account.children],
    )


class Linker:
    def __init__(
        self,
        registry: Registry,
        store: Store,
        keyring: Keyring,
        sessions: SessionManager,
        states: StateManager,
        events: Events,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.store = store
        self.keyring = keyring
        self.sessions = sessions
        self.states = states
        self.events = events
        self.clock = clock

    async def start(self, name: str, args: Args, account: str | None, cookie: str | None) -> LoginStart:
        provider = self.registry.get(name)
        context = provider.login_context(args, account)
        session = await self.sessions.resolve(cookie)
        if not provider.may_start_user and (session is None or session.user_uuid is None):
            raise SessionRequired(self._session_required_message(name))
        new_cookie = None
        if session is None:
            new_cookie, session = await self.sessions.create()
        verifier, challenge = pkce_pair() if provider.pkce else (None, None)
        state = await self.states.issue(session, name, context, verifier)
        url = provider.authorization_url(state=state, context=context, code_challenge=challenge)
        return LoginStart(url, new_cookie)

    def _session_required_message(self, name: str) -> str:
        starters = [e.cls.display_name() for e in self.registry.enabled() if e.cls.may_start_user]
        title = self.registry.entry(name).cls.display_name()
        if starters:
            return f"Connect {' or '.join(starters)} first; {title} is added to the profile it starts."
        return f"{title} can only be added to an existing profile."

    async def complete(self, name: str, args: Args, cookie: str | None) -> LinkCompleted:
        provider = self.registry.get(name)
        provider.verify_callback(args)
        session = await self.sessions.resolve(cookie)
        payload = await self.states.consume(args.get("state"), session, name)
        assert session is not None  # consume() refuses a state without its session
        if args.get("error") is not None:
            raise AccessDenied()
        provider.check_callback(args, payload.context)
        code = args.get("code")
        if not code or len(code) > MAX_CODE_LENGTH:
            raise BadRequest("The authorization code is missing or malformed.")
        accounts = await provider.complete(
            Callback(args, code, payload.context, provider.context.redirect_uri, payload.code_verifier)
        )
        if not accounts:
            raise ProviderError("The platform returned no account.")
        primary = accounts[0]
        session_hashes = self.keyring.digests(USER_INDEX, session.user_uuid) if session.user_uuid else []
        outcome = await self.store.save_link(
            connection_write(name, primary, self.keyring),
            session_hashes,
            self._new_user() if provider.may_start_user else None,
            self.clock(),
        )
        user_uuid = self.keyring.open(f"user:{outcome.user.id}", outcome.user.uuid_sealed)
        ended = self.registry.entry(name).ends_session
        new_cookie = None
        if ended:
            await self.sessions.end(session)
        else:
            new_cookie, _ = await self.sessions.rotate(session, user_uuid)
        for row in outcome.connections:
            self.events.saved(info_from_row(row, user_uuid), created=row.created_at == row.updated_at)
        for row in outcome.removed:
            self.events.removed(info_from_row(row, user_uuid), "replaced")
        return LinkCompleted(
            user_uuid=user_uuid,
            provider=name,
            accounts=[
                {"id": row.account_id, "name": row.name, "kind": row.kind} for row in outcome.connections
            ],
            new_cookie=new_cookie,
            session_ended=ended,
            created_user=outcome.created_user,
            removed=[row.account_id for row in outcome.removed],
        )

    def _new_user(self) -> UserRow:
        user_id = secrets.token_hex(12)
        value = str(uuid.uuid4())
        return UserRow(
            id=user_id,
            uuid_hash=self.keyring.digest(USER_INDEX, value),
            uuid_sealed=self.keyring.seal(f"user:{user_id}", value),
            created_at=self.clock(),
        )
