"""A batch of 1,000 sends, immediate against scheduled (send_at): what holding each channel in the Store costs.

Run: .venv/bin/python loadtests/scheduled_batch_bench.py [--rounds 3]. One embedded node in a temporary data
dir; each round POSTs one batch of each kind and prints its wall time and this process's CPU (client and node
share the process), and the ratio scheduled/immediate. A scheduled item's entry is stored before the 202 by one
ask to the Scheduler per entry (actors/ingress.py `commit`), so the ratio tracks that path.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import http, running_node  # noqa: E402

ITEMS = 1000


def item(i: int, send_at: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": f"u{i}", "channels": ["sms"], "to": {"phone": "+15555550100"}, "content": {"sms": {"text": "hi"}}}
    if send_at is not None:
        body["send_at"] = send_at
    return body


async def main(tmp: str, rounds: int) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    async with running_node(Path(tmp)) as herald, http(herald) as client:
        client.timeout = 120
        await client.post("/v1/notifications/batch", json={"items": [item(i, None) for i in range(ITEMS)]})  # warm up
        for _ in range(rounds):
            walls: dict[str, float] = {}
            for label, at in (("immediate", None), ("scheduled", later)):
                start, cpu = time.perf_counter(), time.process_time()
                response = await client.post("/v1/notifications/batch", json={"items": [item(i, at) for i in range(ITEMS)]})
                assert response.status_code == 202, response.text
                walls[label] = time.perf_counter() - start
                print(f"{label:9} {walls[label]:.3f} s wall, {time.process_time() - cpu:.3f} s CPU")
            print(f"scheduled/immediate: {walls['scheduled'] / walls['immediate']:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, tmp, args.rounds)
