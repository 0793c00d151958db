"""S3 across processes: 20 identical callbacks fired at once at two linkd processes sharing the
databases give exactly one success and one code exchange."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import linkd_example

from .browser import Browser
from .flows import to_callback
from .processes import start_linkd, stop, write_env_file
from .servers import ServerThread, free_port

SECRET = "Qm9vdHN0cmFwLXRlc3Qtc2VjcmV0LXdpdGgtZW5vdWdoLWVudHJvcHk"


def test_twenty_concurrent_replays_over_two_processes_give_one_success(tmp_path: Path) -> None:
    fake_port = free_port()
    fake_url = f"http://127.0.0.1:{fake_port}/oauth"
    sandbox = linkd_example.ExampleProvider.sandbox(fake_url)
    fake = ServerThread(
        lambda: __import__("tornado.web").web.Application(
            [("/oauth" + p, h, kw) for p, h, kw in sandbox.handlers]
        ),
        port=fake_port,
    ).start()
    ports = [free_port(), free_port()]
    env_file = write_env_file(
        tmp_path / "linkd.env",
        {
            "STATE_TOKEN_SECRET": SECRET,
            "SESSION_DB_PATH": str(tmp_path / "data" / "linkd.db"),
            "TOKEN_DB_PATH": str(tmp_path / "data" / "linkd.db"),
            "LINKD_PROVIDERS": "example",
            "LINKD_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}",
            **sandbox.settings,
        },
    )
    procs = [start_linkd(env_file, port) for port in ports]
    try:
        browser = Browser("application/json")
        callback = to_callback(browser, f"http://127.0.0.1:{ports[0]}/example/login")
        cookie = browser.cookie("session_id")
        assert cookie is not None
        urls = [callback.replace(str(ports[0]), str(ports[i % 2])) for i in range(20)]

        def fire(url: str) -> int:
            return (
                Browser("application/json").get(url, headers={"Cookie": f"session_id={cookie.value}"}).status
            )

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            statuses = list(pool.map(fire, urls))
        assert statuses.count(200) == 1, statuses
        assert all(400 <= s < 500 for s in statuses if s != 200), statuses
        assert sandbox.state.counts.get("token") == 1
    finally:
        for proc in procs:
            stop(proc)
        fake.stop()
