"""Read latency beside the delivery pipeline's writes: GET status and history, alone and under a POST load.

    .venv/bin/python loadtests/read_latency_bench.py                                   # 10 s per phase
    .venv/bin/python loadtests/read_latency_bench.py --herald-root ../herald-old        # another tree's node

One run, stopping by itself: starts `herald serve --port 0` on a fresh data dir (local
disk), seeds 200 notifications, then measures, in this order:

1. reference: `--readers` closed-loop connections (two `wrk` processes: 2/3 of them on
   GET /v1/notifications/{id} of a random seeded id, 1/3 on GET /v1/users/{id}/notifications
   ?limit=20 of a random user, as the locust mix's 2:1) for `--duration` s, nothing else;
2. under write load: the same readers while another `wrk` posts closed-loop on `--writers`
   connections, 3 web-only to 1 all-channel body over 1,000 users (the locust mix's
   writes), so the pipeline (bus, consumers, providers, ledger, sinks, Recorder) writes
   all the time.

The locust mix closed-loop is 50 users, 8 of 11 requests writes: 14 readers and 36 writers
by default. Prints per route rate, p50 and p99 for both phases and the ratio, the POSTs'
rate and latency, and the server's CPU. `--herald-root` runs the node of another checkout
(e.g. a `git worktree add` of an older commit) with this venv's Python, for a before/after
on the same machine. wrk is needed (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import Server  # noqa: E402

READ_LUA = r"""
wrk.headers["Authorization"] = "Bearer KEY"
local ids = {IDS}
local route = ROUTE
request = function()
  if route == "status" then
    return wrk.format("GET", "/v1/notifications/" .. ids[math.random(1, #ids)])
  end
  return wrk.format("GET", "/v1/users/load-" .. math.random(0, 999) .. "/notifications?limit=20")
end
"""

WRITE_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer KEY"
local n = 0
local web = '{"user_id":"%s","channels":["web"],"content":{"web":{"title":"Hello","body":"You have a new message","url":"https://example.org/inbox"}}}'
local all = '{"user_id":"%s","channels":["email","sms","push","web"],"priority":"high","content":{"email":{"subject":"Your code","text":"Code 1234","html":"<p>Code <b>1234</b></p>"},"sms":{"text":"Code 1234"},"push":{"title":"Code","body":"1234","data":{"kind":"otp"}},"web":{"title":"Code","body":"1234","url":"https://example.org/codes"}},"to":{"email":"%s@example.org","phone":"+15555550100","device_token":"tok"}}'
request = function()
  n = n + 1
  local user = "load-" .. math.random(0, 999)
  local body
  if n % 4 == 0 then body = string.format(all, user, user) else body = string.format(web, user) end
  return wrk.format(nil, nil, nil, body)
end
"""


def seed_main(params: dict[str, Any]) -> None:
    """Seed notifications (a separate process, trio + httpx); prints their ids as JSON."""
    import httpx
    import trio

    ids: list[str] = []

    async def main() -> None:
        headers = {"Authorization": f"Bearer {params['key']}"}
        async with httpx.AsyncClient(base_url=params["url"], headers=headers, timeout=30) as client:
            for i in range(params["seed"]):
                body = {"user_id": f"load-{i % 1000}", "channels": ["web", "sms"], "content": {
                    "web": {"title": "t", "body": "b"}, "sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}
                response = await client.post("/v1/notifications", json=body)
                ids.append(response.json()["notification_id"])

    trio.run(main)
    print(json.dumps({"ids": ids}))


def start_wrk(work: Path, name: str, lua: str, url: str, connections: int, duration: float) -> subprocess.Popen[str]:
    script = work / f"{name}.lua"
    script.write_text(lua)
    return subprocess.Popen(
        ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "30s", "--latency", "-s", str(script), url],
        stdout=subprocess.PIPE, text=True,
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk_figures(output: str) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms), non-2xx count from wrk's --latency output."""

    def ms(label: str) -> float:
        found = re.search(rf"\b{label}%\s+([\d.]+)(us|ms|s)\b", output)
        return float(found.group(1)) * _UNITS[found.group(2)] if found else float("nan")

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"per_s": float(rate.group(1)) if rate else float("nan"), "p50": ms("50"), "p99": ms("99"),
            "non2xx": float(errors.group(1)) if errors else 0.0}


def read_phase(work: Path, url: str, key: str, ids: list[str], readers: int, duration: float) -> dict[str, dict[str, float]]:
    """Both read routes at once for `duration` s; wrk's figures per route."""
    status_conns = max(1, round(readers * 2 / 3))
    wrks = {}
    for route, conns in (("status", status_conns), ("history", max(1, readers - status_conns))):
        lua = READ_LUA.replace("KEY", key).replace("IDS", ",".join(f'"{i}"' for i in ids)).replace("ROUTE", f'"{route}"')
        wrks[route] = start_wrk(work, route, lua, url, conns, duration)
    return {route: wrk_figures(p.communicate(timeout=duration + 60)[0]) for route, p in wrks.items()}


def show(route: str, label: str, f: dict[str, float]) -> None:
    print(f"GET {route:8} {label:13} {f['per_s']:7.0f} req/s  p50 {f['p50']:7.1f} ms  p99 {f['p99']:7.1f} ms  non-2xx {f['non2xx']:.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--readers", type=int, default=14)
    parser.add_argument("--writers", type=int, default=36)
    parser.add_argument("--herald-root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--data-root", type=Path, default=None, help="where the node's data dir goes (default: TMPDIR; local disk)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and the logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="herald-reads-", dir=args.data_root))
    root = args.herald_root.resolve()
    server = Server(
        "herald", [sys.executable, "-m", "actors.cli", "serve", "--port", "0", "--data-dir", str(work / "data")],
        root, work / "herald.log", env={"PYTHONPATH": str(root)},
    )
    server.start()
    try:
        seeded = json.loads(subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "_seed", json.dumps({"url": server.url, "key": server.key, "seed": 200})],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout)
        ids = seeded["ids"]
        server.wait_idle(30)
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        print(f"node: {root} (commit {commit})")
        print(f"readers {args.readers} (wrk; status:history 2:1), writers {args.writers} (wrk, 3 web : 1 all-channel), {args.duration:g} s per phase")
        cpu0, t0 = server.cpu_s(), time.monotonic()
        alone = read_phase(work, server.url, server.key, ids, args.readers, args.duration)
        cpu_alone = (server.cpu_s() - cpu0) / (time.monotonic() - t0)
        server.wait_idle(30)
        writes = start_wrk(work, "post", WRITE_LUA.replace("KEY", server.key), f"{server.url}/v1/notifications", args.writers, args.duration + 3)
        time.sleep(2.0)  # the pipeline is busy before the readers start
        cpu0, t0 = server.cpu_s(), time.monotonic()
        loaded = read_phase(work, server.url, server.key, ids, args.readers, args.duration)
        cpu_loaded = (server.cpu_s() - cpu0) / (time.monotonic() - t0)
        posts = wrk_figures(writes.communicate(timeout=args.duration + 60)[0])
        for route in ("status", "history"):
            show(route, "alone", alone[route])
            show(route, "under writes", loaded[route])
            print(f"GET {route:8} p99 under writes / alone: {loaded[route]['p99'] / alone[route]['p99']:.1f}x")
        print(f"POST under the mix: {posts['per_s']:.0f} req/s, p50 {posts['p50']:.1f} ms, p99 {posts['p99']:.1f} ms, non-2xx {posts['non2xx']:.0f}")
        print(f"server CPU: {cpu_alone:.0%} of a core with reads alone, {cpu_loaded:.0%} under writes")
    finally:
        print(server.stop())
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_seed":
        seed_main(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
