"""Probe, not a test (docs/deploy.md, "What each failure does"): what the API answers while the node's Cassandra
is stopped (SIGSTOP), printed, and whether the node is still up after 20 s of it. Run from the repository's root:

    .venv/bin/python loadtests/probe_cassandra_down.py

Starts its own Cassandra (tests/servers.py, scripts/install-engines.sh cassandra) and an `all` node on it.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, os.getcwd())
from tests.helpers import http, running_node, web_notification  # noqa: E402
from tests.servers import cassandra_server  # noqa: E402


async def call(api: Any, label: str, method: str, path: str, **kw: Any) -> Any:
    began = time.monotonic()
    try:
        r = await api.request(method, path, timeout=60, **kw)
        print(f"{label}: {method} {path} {r.status_code} after {time.monotonic() - began:.1f}s {r.text[:140]!r}", flush=True)
        return r
    except Exception as exc:  # noqa: BLE001 - a probe reports what happened
        print(f"{label}: {method} {path} {type(exc).__name__} after {time.monotonic() - began:.1f}s", flush=True)
        return None


async def main(node: Any, tmp: Path) -> None:
    async with running_node(tmp / "node", logstore=f"{node.url}/probe?timeout_s=2") as herald, http(herald) as api:
        nid = (await call(api, "up", "POST", "/v1/notifications", json=web_notification("c1"))).json()["notification_id"]
        os.kill(node.pid, signal.SIGSTOP)
        try:
            await call(api, "stopped", "GET", f"/v1/notifications/{nid}")
            await call(api, "stopped", "POST", "/v1/notifications", json=web_notification("c2"))
            await call(api, "stopped", "GET", "/readyz")
            await trio.sleep(20)  # the Recorder's restarts: does the node outlive them?
        finally:
            os.kill(node.pid, signal.SIGCONT)
        await trio.sleep(3)
        await call(api, "resumed", "POST", "/v1/notifications", json=web_notification("c3"))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as d, cassandra_server(Path(d) / "cassandra") as server:
        trio.run(main, server, Path(d))
