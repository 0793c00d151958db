"""Key rotation and row binding at rest (SECURITY.md T5, T6), through a restarted linkd."""

from __future__ import annotations

from typing import Any

import pytest

from linkd.errors import SealError

from .browser import Browser
from .conftest import World

OLD = "Zx8Cv7Bn6Mq5Wr4Et3Yu2Ip1Oa9Sd8Fg7Hj6Kl5Pz"
NEW = "k3Jr9vXq2LmP8sTzW4nB6yHc1dFgA5eR7uIoQ0wE"


def test_a_rotated_secret_still_opens_sessions_and_tokens_sealed_before(tmp_path: Any) -> None:
    data = tmp_path / "data"
    first = World(data, {"LINKD_PROVIDERS": "example", "STATE_TOKEN_SECRET": OLD})
    browser = Browser("application/json")
    uuid = browser.follow(first.url + "/example/login").json()["user_uuid"]
    cookie = browser.cookie("session_id")
    first.close()

    second = World(
        data, {"LINKD_PROVIDERS": "example", "STATE_TOKEN_SECRET": NEW, "STATE_TOKEN_SECRET_PREVIOUS": OLD}
    )
    try:
        again = Browser("application/json")
        assert cookie is not None
        response = again.get(second.url + "/", headers={"Cookie": f"session_id={cookie.value}"})
        assert response.json()["user_uuid"] == uuid
        row = second.run(lambda: second.services.store.get_connection(1))
        assert second.services.tokens.open(row).access_token.startswith("at_")
    finally:
        second.close()

    third = World(data, {"LINKD_PROVIDERS": "example", "STATE_TOKEN_SECRET": NEW})
    try:
        stranger = Browser("application/json")
        response = stranger.get(third.url + "/", headers={"Cookie": f"session_id={cookie.value}"})
        assert (
            response.status == 200 and response.json()["user_uuid"] is None
        )  # unknown key: no session, no 500
        row = third.run(lambda: third.services.store.get_connection(1))
        with pytest.raises(SealError):
            third.services.tokens.open(row)
    finally:
        third.close()


def test_swapped_ciphertexts_fail_instead_of_exchanging_identities(make_world: Any) -> None:
    world = make_world(LINKD_PROVIDERS="example")
    fake = world.sandboxes["example"]
    for subject in ("acct-a", "acct-b"):
        fake.next_subject = subject
        assert Browser("application/json").follow(world.url + "/example/login").status == 200
    [(a,)], [(b,)] = (
        world.sql("tokens", "SELECT tokens_sealed FROM connections WHERE id = ?", (i,)) for i in (1, 2)
    )
    world.sql("tokens", "UPDATE connections SET tokens_sealed = ? WHERE id = 1", (b,))
    world.sql("tokens", "UPDATE connections SET tokens_sealed = ? WHERE id = 2", (a,))
    for connection_id in (1, 2):
        row = world.run(lambda cid=connection_id: world.services.store.get_connection(cid))
        with pytest.raises(SealError):
            world.services.tokens.open(row)
