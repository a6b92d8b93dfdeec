"""Probe, not a test (docs/deploy.md, "What each failure does"): what a POST answers while the node's Kafka is
stopped (`stop`: SIGSTOP, then SIGCONT) or killed (`kill`: SIGKILL), printed. Run from the repository's root:

    .venv/bin/python loadtests/probe_kafka_down.py stop|kill

Starts its own Kafka (tests/servers.py, scripts/install-engines.sh kafka) and an `all` node on it.
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
from tests.servers import kafka_server  # noqa: E402

WAIT_S = 60.0


async def post(api: Any, label: str) -> None:
    began = time.monotonic()
    try:
        r = await api.post("/v1/notifications", json=web_notification("k1"), timeout=WAIT_S)
        print(f"{label}: {r.status_code} after {time.monotonic() - began:.1f}s {r.text[:160]!r}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a probe reports what happened
        print(f"{label}: {type(exc).__name__} after {time.monotonic() - began:.1f}s (no answer)", flush=True)


async def main(kafka: Any, tmp: Path, how: str) -> None:
    async with running_node(tmp / "node", bus=f"{kafka.url}?prefix=probe&request_timeout_ms=5000") as herald, http(herald) as api:
        await post(api, "kafka up")
        os.kill(kafka.pid, signal.SIGSTOP if how == "stop" else signal.SIGKILL)
        await post(api, f"kafka {how}")
        print("readyz while down:", (await api.get("/readyz")).status_code, flush=True)
        if how == "stop":
            os.kill(kafka.pid, signal.SIGCONT)
            await trio.sleep(2)
            await post(api, "kafka resumed")
            await post(api, "kafka resumed, again")


if __name__ == "__main__":
    how = sys.argv[1] if len(sys.argv) > 1 else "stop"
    with tempfile.TemporaryDirectory() as d, kafka_server(Path(d) / "kafka") as server:
        trio.run(main, server, Path(d), how)
