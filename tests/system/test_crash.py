"""SECURITY.md D2 and T2: `kill -9` under load loses nothing, half-writes nothing, leaves no plaintext.

Ten rounds of 50 concurrent connect flows against two workers. At a random moment of
each round the test kills, with SIGKILL, one worker (even rounds: the supervisor
replaces it) or the whole process group (odd rounds: the test restarts linkd on the
same files). After each round, with linkd serving again:

- `PRAGMA integrity_check` is `ok` and no foreign key dangles;
- every callback that answered 200 is fully present: its account is linked to the
  user UUID the response named, and the API hands out an access token that the fake
  platform minted for that very account (tokens and link were committed together);
- no half-written link: every stored connection has a sealed token that opens to a
  token of its own account, every user owns a connection;
- consumed states stay consumed: replaying a successful callback with the cookie
  that started it is refused and reaches no token endpoint;
- the database files as the kill left them (`-wal` and `-shm` included) hold no
  token, code, verifier, state, cookie, user UUID or secret in any encoding.

The seed of the random kill moments is printed (`LINKD_CRASH_SEED` replays it).
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from ..browser import Browser
from .conftest import Fakes, Launcher, Linkd, serve_fakes, sqlite_integrity
from .leaks import Needles

ROUNDS = 10
FLOWS = 50
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@dataclass
class Flow:
    """One browser's connect, as seen from outside; times are time.monotonic()."""

    callback: str | None = None
    cookie: str | None = None
    sent_at: float | None = None  # when the callback request was sent
    status: int | None = None
    body: dict[str, Any] | None = None
    answered_at: float | None = None
    new_cookie: str | None = None
    error: str | None = None

    def run(self, url: str, go: threading.Event, progress: Progress) -> None:
        browser = Browser("application/json")
        go.wait(10)
        try:
            login = browser.get(url + "/example/login")
            if login.status != 302:
                self.status = login.status  # an HTTP error is never what a kill causes: the test fails
                return
            consent = browser.get(login.location)  # the fake platform, which is not killed
            assert consent.status == 302, consent.text
            self.callback = consent.location
            cookie = browser.cookie("session_id")
            self.cookie = cookie.value if cookie else None
            self.sent_at = time.monotonic()
            response = browser.get(self.callback)
            self.answered_at = time.monotonic()
            progress.step()
            self.status = response.status
            if response.status == 200:
                self.body = response.json()
                rotated = browser.cookie("session_id")
                self.new_cookie = rotated.value if rotated else None
        except (OSError, http.client.HTTPException) as exc:  # the kill cut this flow: expected
            self.error = type(exc).__name__


class Progress:
    """How many callbacks were answered so far; the kill waits for a random count of them."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def step(self) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= count, timeout), "the flows stalled"


@pytest.fixture
def crash_fakes() -> Any:
    served = serve_fakes(unique_subjects=True)
    yield served
    served.server.stop()


def test_kill_9_rounds_lose_nothing_and_leave_no_plaintext(linkd: Launcher, crash_fakes: Fakes) -> None:
    seed = int(os.environ.get("LINKD_CRASH_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    print(f"\ncrash seed {seed} (LINKD_CRASH_SEED={seed} replays these kill moments)")
    fakes = crash_fakes
    daemon = linkd(fakes, LINKD_STATE_TTL="3600")
    checked: set[str] = set()  # account ids whose connection has been verified already
    needles = Needles()
    needles.add("master secret", [daemon.secret])
    needles.add("api token", [daemon.api_token])
    totals = dict.fromkeys(
        ("flows", "succeeded", "succeeded_after_kill", "in_flight", "cut", "verified_links"), 0
    )

    for round_no in range(ROUNDS):
        whole_group = round_no % 2 == 1
        states_before = daemon.count("states")
        flows = [Flow() for _ in range(FLOWS)]
        go, progress = threading.Event(), Progress()
        threads = [
            threading.Thread(target=f.run, args=(daemon.url, go, progress), daemon=True) for f in flows
        ]
        for thread in threads:
            thread.start()
        go.set()
        # the random moment of the kill: after a random number of callbacks were answered, plus jitter
        progress.wait_for(rng.randint(0, FLOWS * 9 // 10))
        time.sleep(rng.uniform(0, 0.03))
        workers = sorted(daemon.worker_pids())
        mark = daemon.mark()
        if whole_group:
            daemon.kill_group()
        else:
            os.kill(rng.choice(workers), signal.SIGKILL)
        killed_at = time.monotonic()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads), "a flow hung"

        # what the kill left on disk: no plaintext, whatever the moment
        round_needles = round_secrets(fakes, flows)
        needles.add("round", round_needles.secrets)
        left = {p.name: p.read_bytes() for p in daemon.db_files()}
        assert not round_needles.search_all(left), f"round {round_no}: plaintext left behind"

        if whole_group:
            daemon.start()  # restart on the same files
        else:
            replaced = daemon.wait_workers(mark)
            assert len(replaced) == 2 and set(workers) - replaced, "the killed worker was not replaced"

        ok = [f for f in flows if f.status == 200]
        assert all(f.status in (None, 200) for f in flows), [f.status for f in flows]  # no 4xx, no 5xx
        totals["flows"] += FLOWS
        totals["succeeded"] += len(ok)
        totals["succeeded_after_kill"] += sum(1 for f in ok if f.answered_at and f.answered_at > killed_at)
        totals["cut"] += sum(1 for f in flows if f.error)
        totals["in_flight"] += sum(
            1 for f in flows if f.sent_at and f.sent_at < killed_at and not (f.answered_at or 0) < killed_at
        )
        print(
            f"round {round_no + 1}: kill -9 {'process group' if whole_group else 'one worker'}; "
            f"{len(ok)} succeeded, {sum(1 for f in flows if f.error)} cut"
        )

        for path in daemon.db_paths():
            assert sqlite_integrity(path) == "ok", path
        assert daemon.sql("PRAGMA foreign_key_check") == []
        verify_successes(daemon, fakes, ok)
        totals["verified_links"] += verify_every_link(daemon, fakes, checked)
        verify_states_stay_consumed(daemon, fakes, ok)
        # a success spent its state; only a flow cut short may have left one behind
        assert daemon.count("states") - states_before <= FLOWS - len(ok)

    # every secret of every round, in every encoding, in the files as they are now
    daemon.kill_group()
    final = {p.name: p.read_bytes() for p in daemon.db_files()}
    assert not needles.search_all(final)
    print(
        f"crash safety: {ROUNDS} rounds of kill -9 ({ROUNDS // 2} worker, {ROUNDS // 2} process group), "
        f"{totals['flows']} flows, {totals['succeeded']} answered success "
        f"({totals['succeeded_after_kill']} after a worker kill), {totals['in_flight']} callbacks in flight "
        f"at a kill, {totals['cut']} flows cut by a kill, "
        f"{totals['verified_links']} stored links verified whole, 0 lost; "
        f"{len(needles.secrets)} secrets x encodings = {len(needles)} needles, 0 found in {len(final)} files"
    )
    assert totals["succeeded"] > 0 and totals["cut"] > 0, totals


def round_secrets(fakes: Fakes, flows: list[Flow]) -> Needles:
    """What this round minted or carried: tokens, codes, verifiers, states, cookies, user UUIDs."""
    needles = Needles()
    needles.add("client secret", [fakes.example.client_secret])
    needles.add("token or code", list(fakes.example.minted))
    needles.add("verifier", fakes.verifiers())
    for flow in flows:
        if flow.callback:
            query = flow.callback.split("?", 1)[1]
            needles.add(
                "state", [v for k, _, v in (p.partition("=") for p in query.split("&")) if k == "state"]
            )
        needles.add("cookie", [flow.cookie, flow.new_cookie])
        if flow.body:
            needles.add("user uuid", [flow.body["user_uuid"]])
    return needles


def verify_successes(daemon: Linkd, fakes: Fakes, ok: list[Flow]) -> None:
    """Every 200 is fully present: the link to its user, and a token of its own account."""
    for flow in ok:
        assert flow.body is not None
        account = flow.body["accounts"][0]["id"]
        listed = daemon.api(f"/api/v1/connections?provider=example&account={account}")
        assert listed.status == 200, listed.text
        (row,) = listed.json()["connections"]
        assert row["user_uuid"] == flow.body["user_uuid"]
        token = daemon.api(f"/api/v1/connections/{row['id']}/token")
        assert token.status == 200, token.text
        assert fakes.subject_of(token.json()["access_token"]) == account


def verify_every_link(daemon: Linkd, fakes: Fakes, checked: set[str]) -> int:
    """No half-written link: each new connection's token opens and belongs to its account."""
    rows = daemon.sql("SELECT id, account_id, tokens_sealed, user_id FROM connections")
    users = {r[0] for r in daemon.sql("SELECT id FROM users")}
    assert users == {r[3] for r in rows}, "a user without a connection, or a connection without a user"
    new = 0
    for connection_id, account, sealed, _ in rows:
        assert sealed, f"connection {connection_id} has no token"
        if account in checked:
            continue
        token = daemon.api(f"/api/v1/connections/{connection_id}/token")
        assert token.status == 200, token.text
        assert fakes.subject_of(token.json()["access_token"]) == account
        checked.add(account)
        new += 1
    return new


def verify_states_stay_consumed(daemon: Linkd, fakes: Fakes, ok: list[Flow]) -> None:
    exchanges = fakes.example.counts.get("token", 0)
    links = daemon.count("connections")
    for flow in ok:
        assert flow.callback and flow.cookie
        replay = Browser("application/json").get(
            flow.callback, headers={"Cookie": f"session_id={flow.cookie}"}
        )
        assert replay.status == 400, (replay.status, replay.text)
        assert replay.json()["error"] == "invalid_state"
    assert fakes.example.counts.get("token", 0) == exchanges, "a replayed state reached the token endpoint"
    assert daemon.count("connections") == links
