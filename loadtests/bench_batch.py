"""Batch ingest: notifications/s per API core through POST /v1/notifications/batch, beside the single POST.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/bench_batch.py [--duration 8] [--sizes 100,1000] [--node api,all]

What one run does (loopback only, every step bounded in time, stops by itself):

1. starts the node under test as its own process, on a temporary data dir on local disk
   (the bus really fsyncs):
   - `api` (default): a node of the role `api` (front end, ingress, its recorder; no
     delivery), run by this file (`_api`) on embedded backends it opens itself, as
     tests/actors/test_roles.py does: `herald serve --role api` is refused with embedded
     backends, which serve one process. Its CPU is the API's alone: the figure the goal
     (>= 20,000 notifications/s per API core) is about. What it accepts stays on the bus.
   - `all`: `herald serve` (the role `all`), as loadtests/bench.py runs it: the delivery
     pipeline runs in the same process and competes for its CPU while ingest runs;
2. against each node, closed-loop `wrk` runs (one thread, `--duration` s each, after an
   unmeasured `--warmup`): the single POST /v1/notifications (`--connections`), then
   POST /v1/notifications/batch with batches of each of `--sizes` (`--batch-connections`).
   A batch's items are web notifications to that many distinct users (bench-b0, bench-b1,
   ...), the same users every call;
3. prints per run: requests/s, notifications accepted/s (202s x items: every item is
   valid), p50/p99 latency of a call, the server's CPU (% of a core) and CPU per
   notification, and **notifications per API core**: accepted / server CPU seconds (what
   one core of the node accepts when the node is the limit; it does not depend on the
   load generator keeping the node busy), and each batch figure's ratio to the single
   POST's of the same run and node.

After each run against the `all` node the script waits (bounded by `--drain-max`) until
the process is idle again, so the delivery backlog of one run does not eat into the
next; the drain time is printed. The machine has 2 cores shared by the server, the load
generator and whatever else runs: compare ratios within a run, not absolute numbers.

The server processes are this file (`_api`) or the `herald` console script; the load
generator is wrk (apt-get install -y wrk), required here: the Python fallback of
bench.py cannot keep a node busy with batches.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import BIN, ROOT, Server, run_load  # noqa: E402
from benchlib import LOOPBACK, check_limits, machine_busy_s  # noqa: E402

SINGLE = "/v1/notifications"
BATCH = "/v1/notifications/batch"
API_KEY = "bench-batch-key"


def web_item(user: str) -> dict[str, Any]:
    return {"user_id": user, "channels": ["web"], "content": {"web": {"title": "t", "body": "b"}}}


def batch_body(size: int) -> bytes:
    return json.dumps({"items": [web_item(f"bench-b{i}") for i in range(size)]}, separators=(",", ":")).encode()


@dataclass
class Measured:
    node: str
    label: str
    items: int  # notifications per call
    result: dict[str, Any]
    server_cpu_s: float
    drain_s: float = 0.0

    @property
    def accepted(self) -> int:
        return int(self.result["statuses"].get(202, 0)) * self.items

    @property
    def per_s(self) -> float:
        return self.accepted / self.result["duration_s"]

    @property
    def per_core(self) -> float:
        return self.accepted / self.server_cpu_s if self.server_cpu_s > 0 else 0.0

    @property
    def cpu_pct(self) -> float:
        return 100 * self.server_cpu_s / self.result["duration_s"]

    @property
    def bad(self) -> int:
        r = self.result
        return sum(v for k, v in r["statuses"].items() if k != 202) + sum(
            r[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        )

    def line(self) -> str:
        r = self.result
        cpu_us = 1e6 * self.server_cpu_s / max(1, self.accepted)
        others = {k: v for k, v in r["statuses"].items() if k != 202}
        drain = f"  drained in {self.drain_s:.1f}s" if self.drain_s else ""
        return (f"  {self.node:<4} {self.label:<11} {r['requests'] / r['duration_s']:7.0f} calls/s  {self.per_s:8.0f} notifications/s  "
                f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  server CPU {self.cpu_pct:3.0f}%  {cpu_us:6.1f} us/notification  "
                f"-> {self.per_core:8.0f} notifications/s per API core  non-202 {others or 0}{drain}")  # fmt: skip


def _api_main(params: dict[str, Any]) -> None:
    """A node of the role `api` on embedded backends of its own (a separate process, started by the driver)."""
    import dataclasses
    import signal

    import trio

    from actors.app import run_herald
    from actors.config import load_config
    from reactor.backends import open_backends
    from reactor.gc_policy import tune_for_serving

    data = Path(params["data_dir"])
    config = dataclasses.replace(
        load_config(env={}, data_dir=data, host=LOOPBACK, port=0, api_key=params["key"], log_level="WARNING"), role="api"
    )

    async def main() -> None:
        async with open_backends(config.backend_settings()) as backends, trio.open_nursery() as nursery:
            herald = await nursery.start(lambda task_status: run_herald(config, signals=False, backends=backends, task_status=task_status))
            if params.get("gc", True):
                tune_for_serving()  # as `herald serve` does once the node is up (actors/cli.py, reactor/gc_policy.py)
            key_file = data / "bench-key"
            key_file.write_text(params["key"])
            print(f"api: serving on {herald.url}", flush=True)
            print(f"api: API key in {key_file}", flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    herald.system.request_shutdown()
                    break

    trio.run(main)


def measure(node: Server, name: str, args: argparse.Namespace, workdir: Path) -> list[Measured]:
    plans = [("single", SINGLE, json.dumps(web_item("bench-u1"), separators=(",", ":")).encode(), 1, args.connections)]
    plans += [(f"batch {n}", BATCH, batch_body(n), n, args.batch_connections) for n in args.sizes]
    if args.warmup > 0:
        for _label, path, body, _n, connections in plans:
            run_load("wrk", node.url, node.key, body, connections, args.warmup, workdir, path)
            if name == "all":
                node.wait_idle(args.drain_max)
    runs = []
    for label, path, body, n, connections in plans:
        cpu0 = node.cpu_s()
        result = run_load("wrk", node.url, node.key, body, connections, args.duration, workdir, path)
        run = Measured(name, label, n, result, node.cpu_s() - cpu0)
        if not node.alive():
            raise RuntimeError(f"{name} died during the run; see {node.log_path}")
        if name == "all":
            run.drain_s = node.wait_idle(args.drain_max)
        runs.append(run)
        print(run.line(), flush=True)
    return runs


def driver(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if not shutil.which("wrk"):
        print("bench_batch: wrk is not on PATH: apt-get install -y wrk", file=sys.stderr)
        return 2
    herald_bin = BIN / "herald"
    tmp_root = Path(tempfile.mkdtemp(prefix="herald-bench-batch-", dir=args.data_root))
    servers = {
        "api": Server("api", [sys.executable, str(Path(__file__).resolve()), "_api",
                              json.dumps({"data_dir": str(tmp_root / "api-data"), "key": API_KEY, "gc": not args.no_gc_policy})], ROOT, tmp_root / "api.log"),
        "all": Server("herald", [str(herald_bin), "serve", "--host", LOOPBACK, "--port", "0", "--data-dir", str(tmp_root / "all-data")],
                      tmp_root, tmp_root / "all.log"),
    }  # fmt: skip
    print(f"bench_batch: {os.cpu_count()} cores shared by the server and wrk; nodes {', '.join(args.node)}; "
          f"{args.duration:g}s per run; data under {tmp_root}")  # fmt: skip
    busy0 = machine_busy_s()
    time.sleep(1.0)
    background = 100 * (machine_busy_s() - busy0)
    if background > 20:
        print(f"bench_batch: WARNING: the machine is already busy ({background:.0f}% of a core before starting): figures will be noisy")
    runs: list[Measured] = []
    ok = True
    stops = []
    try:
        for name in args.node:
            server = servers[name]
            server.start()
            print(f"bench_batch: {name} node pid {server.proc.pid} on {server.url}", flush=True)  # type: ignore[union-attr]
            try:
                runs += measure(server, name, args, tmp_root)
            finally:
                stops.append(server.stop())
    except Exception as exc:  # noqa: BLE001 - report what we have; the servers are stopped above
        ok = False
        print(f"bench_batch: FAILED: {exc}", file=sys.stderr)
    out = ["", "=" * 78, "SUMMARY: batch ingest, notifications per API core (accepted / server CPU seconds)", "=" * 78]
    for name in args.node:
        mine = [r for r in runs if r.node == name]
        single = next((r for r in mine if r.label == "single"), None)
        for r in mine:
            ratio = f"  ({r.per_core / single.per_core:.1f}x the single POST's)" if single and single.per_core and r is not single else ""
            out.append(f"{name:<4} {r.label:<11} {r.per_core:8.0f} notifications/s per API core, {r.per_s:8.0f}/s wall, "
                       f"CPU {r.cpu_pct:.0f}%{ratio}")  # fmt: skip
    best = max((r.per_core for r in runs if r.node == "api" and r.items > 1), default=0.0)
    if best:
        out.append(f"goal >= 20,000 notifications/s per API core (api node, best batch size): {best:.0f} "
                   f"({'met' if best >= 20000 else 'NOT met'})")  # fmt: skip
    out.extend(stops)
    out.append(f"total wall time {time.monotonic() - started:.0f}s")
    print("\n".join(out), flush=True)
    if args.keep_data:
        print(f"bench_batch: data and server logs kept in {tmp_root}")
    else:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return 0 if ok and not any(r.bad for r in runs) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_api"]:
        _api_main(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description="Batch ingest: notifications/s per API core, beside the single POST.")
    parser.add_argument("--duration", type=float, default=8, help="seconds of each measured run (default 8)")
    parser.add_argument("--no-gc-policy", action="store_true",
                        help="leave the api node's garbage collector as CPython sets it (by default it is tuned as `herald serve` tunes it)")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds of each load first (default 2)")
    parser.add_argument("--connections", type=int, default=50, help="connections of the single POST runs (default 50)")
    parser.add_argument("--batch-connections", type=int, default=8, help="connections of the batch runs (default 8)")
    parser.add_argument("--sizes", default="100,1000", help="batch sizes, comma-separated (default 100,1000; at most 1000)")
    parser.add_argument("--node", default="api,all", help="nodes to measure, in order: api, all (default api,all)")
    parser.add_argument("--drain-max", type=float, default=30, help="most seconds to wait for the all node to go idle (default 30)")
    parser.add_argument("--data-root", default=None, help="where the temporary data dir goes (default: the system temp dir)")
    parser.add_argument("--keep-data", action="store_true", help="keep the data dirs and server logs")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        parser.error("--sizes: integers, comma-separated")
    args.node = [n for n in args.node.split(",") if n]
    limits = [
        (0 < args.duration <= 120 and 0 <= args.warmup <= 30, "--duration: 0 < s <= 120; --warmup: 0..30"),
        (1 <= args.connections <= 1000 and 1 <= args.batch_connections <= 200, "--connections: 1..1000; --batch-connections: 1..200"),
        (bool(args.sizes) and all(1 <= s <= 1000 for s in args.sizes), "--sizes: 1..1000 each"),
        (bool(args.node) and all(n in ("api", "all") for n in args.node), "--node: api, all"),
        (0 <= args.drain_max <= 300, "--drain-max: 0..300"),
    ]
    check_limits(parser, limits)
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
