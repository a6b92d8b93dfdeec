"""Sustained mixed load at a fixed rate: per second accepted, delivered and the bus lag; at the end, lost and bounded.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/bench_sustained.py [--rate 40] [--duration 60]

What one run does (loopback only, every step bounded in time, stops by itself):

1. starts a node of the role `all` as its own process (this file, `_node`: `run_herald` on
   embedded backends in a temporary data dir on local disk, the bus really fsyncs; the
   sandbox providers for email, SMS and push, web to the registry; their rate limits
   lifted, since the default quotas, email's 1,000 a minute above all, would cap delivery
   rather than the worker: `--quotas` keeps them). Beside it, in the
   node, a monitor task prints one line a second: notifications the Ingress accepted,
   the sandbox/web providers' calls, and for each channel's consumer group the bus's
   end offset and committed offset summed over the partitions (the Bus port's
   `end_offset` and `committed`): lag = end - committed, the records on the bus whose
   outcome is not recorded yet;
2. a load process (this file, `_load`) sends a mix for `--duration` s on an open-loop
   schedule of `--rate` operations/s over `--connections` keep-alive connections: of
   every 10 operations, 6 single POSTs naming all four channels (email, SMS, push, web,
   with addresses), 1 batch of `--batch` such notifications, 3 reads
   (GET /v1/notifications/{id} of one accepted before). An operation due while every
   connection is busy is counted as *skipped* (the node is not keeping up: the rate is
   too high), never sent late;
3. the driver prints per second: accepted notifications/s and deliveries queued/s (bus
   records appended), delivered/s (records committed, i.e. outcome recorded), the lag,
   the load's answers/s and errors. After the load it waits (bounded by `--drain-max`)
   for the lag to reach 0, then prints: accepted (202s counted by the client, in
   deliveries) beside the bus records appended and committed, **lost** = appended -
   committed after the drain (0 expected) and accepted - appended (0 expected), the
   final lag, and whether the lag stayed **bounded**: its trend over the last 30 s of
   load (a least-squares slope) under 2 % of the delivery rate, and the max over the
   last 15 s not above the max over the 15 s before (with a 1 s-of-traffic slack).

Choose `--rate` as the largest the node holds on your machine (the line says so: no
skipped operations, bounded lag); the machine's other load is printed (noise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import ALL_BODY, ROOT, Server  # noqa: E402
from benchlib import LOOPBACK, RawHttp, check_limits, machine_busy_s, percentile  # noqa: E402

HERE = Path(__file__).resolve()
API_KEY = "bench-sustained-key"
STAT = "STAT "


# -- the node, with its monitor -----------------------------------------------------------------


def _node_main(params: dict[str, Any]) -> None:
    """A node of the role `all` on embedded backends, printing a STAT line a second."""
    import dataclasses
    import signal

    import trio

    from actors.app import run_herald
    from actors.config import load_config
    from reactor.backends import open_backends

    data = Path(params["data_dir"])
    config = load_config(env={}, data_dir=data, host=LOOPBACK, port=0, api_key=params["key"], log_level="WARNING")
    if not params["quotas"]:  # the worker's capacity, not the providers' quotas (email's 1,000 a minute caps it at 16.7/s)
        config = dataclasses.replace(config, limits={ch: {**v, "capacity": 1e9, "refill_per_s": 1e9} for ch, v in config.limits.items()})

    async def stats(herald: Any) -> dict[str, Any]:
        bus = herald.bus
        end = committed = 0
        for channel, group in herald.consumer_groups.items():
            topic = channel.topic()
            for partition in range(bus.partitions(topic)):
                end += await bus.end_offset(topic, partition)
                committed += await bus.committed(group.group, topic, partition)
        return {
            "t": time.monotonic(), "accepted": herald.ingress.accepted, "end": end, "committed": committed,
            "calls": sum(p.calls for p in herald.providers.values()),
        }  # fmt: skip

    async def monitor(herald: Any) -> None:
        while True:
            print(STAT + json.dumps(await stats(herald)), flush=True)
            await trio.sleep(1.0)

    async def main() -> None:
        async with open_backends(config.backend_settings()) as backends, trio.open_nursery() as nursery:
            herald = await nursery.start(lambda task_status: run_herald(config, signals=False, backends=backends, task_status=task_status))
            nursery.start_soon(monitor, herald)
            print(f"node: serving on {herald.url}", flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    herald.system.request_shutdown()
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


# -- the load: an open-loop mix -----------------------------------------------------------------


def _load_main(params: dict[str, Any]) -> None:
    """The mix at a fixed rate; one JSON line a second on stdout (`LOAD {...}`), a final one at the end."""
    import trio

    host, port, key = params["host"], int(params["port"]), params["key"]
    rate, duration, n_conn, batch_size = float(params["rate"]), float(params["duration"]), int(params["connections"]), int(params["batch"])
    counts = {"ops": 0, "skipped": 0, "posts": 0, "batches": 0, "reads": 0, "accepted": 0, "errors": 0, "read_errors": 0}
    read_ms: list[float] = []
    post_ms: list[float] = []
    recent: list[str] = []

    def body(user: str, tag: str) -> dict[str, Any]:
        return {**ALL_BODY, "user_id": user, "to": {**ALL_BODY["to"], "email": f"{user}@example.org"},
                "content": {**ALL_BODY["content"], "web": {"title": tag, "body": "b"}}}  # fmt: skip

    async def op(http: RawHttp, i: int) -> None:
        kind = i % 10
        start = time.monotonic()
        try:
            if kind < 6:
                status, answer = await http.request("POST", "/v1/notifications", json.dumps(body(f"sus-{i % 500}", f"s{i}")).encode())
                counts["posts"] += 1
                if status == 202:
                    counts["accepted"] += 1
                    recent.append(json.loads(answer)["notification_id"])
                    del recent[:-100]
                else:
                    counts["errors"] += 1
                post_ms.append((time.monotonic() - start) * 1e3)
            elif kind == 6:
                items = [body(f"sus-b{(i + j) % 500}", f"b{i}-{j}") for j in range(batch_size)]
                status, answer = await http.request("POST", "/v1/notifications/batch", json.dumps({"items": items}).encode())
                counts["batches"] += 1
                if status == 202:
                    counts["accepted"] += int(json.loads(answer)["accepted"])
                else:
                    counts["errors"] += 1
            elif recent:
                status, _ = await http.request("GET", f"/v1/notifications/{recent[-1 - i % len(recent)]}", b"")
                counts["reads"] += 1
                if status != 200:
                    counts["read_errors"] += 1
                read_ms.append((time.monotonic() - start) * 1e3)
        except (OSError, ConnectionError, trio.BrokenResourceError):
            counts["errors"] += 1
            await http.aclose()
            http.stream = None

    async def main() -> None:
        idle = [RawHttp(host, port, key) for _ in range(n_conn)]

        async def run(http: RawHttp, i: int) -> None:
            try:
                await op(http, i)
            finally:
                idle.append(http)

        async def report() -> None:
            while True:
                print("LOAD " + json.dumps({"t": time.monotonic(), **counts}), flush=True)
                await trio.sleep(1.0)

        async with trio.open_nursery() as nursery:
            reporter = trio.CancelScope()

            async def reporting() -> None:
                with reporter:
                    await report()

            nursery.start_soon(reporting)
            t0 = trio.current_time() + 0.1
            total = int(rate * duration)
            async with trio.open_nursery() as ops:
                for i in range(total):
                    await trio.sleep_until(t0 + i / rate)
                    counts["ops"] += 1
                    if not idle:
                        counts["skipped"] += 1  # every connection busy: the node is not keeping up
                        continue
                    ops.start_soon(run, idle.pop(), i)
            reporter.cancel()
        for http in idle:
            await http.aclose()

    trio.run(main)
    post_ms.sort()
    read_ms.sort()
    print("LOAD " + json.dumps({"t": time.monotonic(), **counts, "final": True,
                                "post_p50": percentile(post_ms, 50), "post_p99": percentile(post_ms, 99),
                                "read_p50": percentile(read_ms, 50), "read_p99": percentile(read_ms, 99)}), flush=True)  # fmt: skip


# -- the driver ---------------------------------------------------------------------------------


def _last(path: Path, prefix: str) -> dict[str, Any] | None:
    """The last complete line of `path` that starts with `prefix`, decoded (None if there is none yet)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None
    for line in reversed(text.splitlines(keepends=True)):
        if line.startswith(prefix) and line.endswith("\n"):
            return dict(json.loads(line[len(prefix) :]))
    return None


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 with fewer than 2 points)."""
    if len(points) < 2:
        return 0.0
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def driver(args: argparse.Namespace) -> int:
    started = time.monotonic()
    tmp_root = Path(tempfile.mkdtemp(prefix="herald-bench-sustained-", dir=args.data_root))
    node_log = tmp_root / "node.log"
    busy0 = machine_busy_s()
    time.sleep(1.0)
    print(f"bench_sustained: {os.cpu_count()} cores; {args.rate:g} operations/s for {args.duration:g}s (of 10: 6 POSTs on all four "
          f"channels, 1 batch of {args.batch}, 3 reads) over {args.connections} connections; providers' quotas "
          f"{'as configured' if args.quotas else 'lifted (the worker is measured)'}; "
          f"machine busy {100 * (machine_busy_s() - busy0):.0f}% of a core before starting", flush=True)  # fmt: skip
    argv = [sys.executable, str(HERE), "_node", json.dumps({"data_dir": str(tmp_root / "data"), "key": API_KEY, "quotas": args.quotas})]
    server = Server("node", argv, ROOT, node_log)
    load: subprocess.Popen[bytes] | None = None
    load_log = tmp_root / "load.log"
    rows: list[dict[str, Any]] = []
    ok = True
    try:
        server.start(60)
        params = {"host": LOOPBACK, "port": int(server.url.rsplit(":", 1)[1]), "key": API_KEY, "rate": args.rate, "duration": args.duration,
                  "connections": args.connections, "batch": args.batch}  # fmt: skip
        while (base := _last(node_log, STAT)) is None:
            time.sleep(0.1)
        cpu0, busy0, wall0 = server.cpu_s(), machine_busy_s(), time.monotonic()
        with open(load_log, "wb") as out:
            load = subprocess.Popen([sys.executable, str(HERE), "_load", json.dumps(params)], stdout=out, stdin=subprocess.DEVNULL)
        print("    s  accepted/s  queued/s  delivered/s      lag  answers/s  skipped  errors", flush=True)
        prev, prev_load = base, {"t": time.monotonic(), "posts": 0, "batches": 0, "reads": 0}
        end_by = time.monotonic() + args.duration + 30
        while load.poll() is None and time.monotonic() < end_by:
            time.sleep(1.0)
            s, lo = _last(node_log, STAT) or prev, _last(load_log, "LOAD ") or prev_load
            dt = max(1e-3, s["t"] - prev["t"])
            ldt = max(1e-3, lo["t"] - prev_load["t"])
            row = {"t": s["t"] - base["t"], "accepted_s": (s["accepted"] - prev["accepted"]) / dt, "queued_s": (s["end"] - prev["end"]) / dt,
                   "delivered_s": (s["committed"] - prev["committed"]) / dt, "lag": s["end"] - s["committed"],
                   "answers_s": sum(lo.get(k, 0) - prev_load.get(k, 0) for k in ("posts", "batches", "reads")) / ldt,
                   "skipped": lo.get("skipped", 0), "errors": lo.get("errors", 0)}  # fmt: skip
            if s["t"] > prev["t"]:
                rows.append(row)
                print(f"  {row['t']:3.0f}  {row['accepted_s']:10.0f}  {row['queued_s']:8.0f}  {row['delivered_s']:11.0f}  {row['lag']:7d}  "
                      f"{row['answers_s']:9.0f}  {row['skipped']:7d}  {row['errors']:6d}", flush=True)  # fmt: skip
            prev, prev_load = s, lo
        if load.poll() is None:
            raise RuntimeError("the load did not finish in time")
        load_wall = time.monotonic() - wall0
        load_cpu = server.cpu_s() - cpu0
        other = max(0.0, 100 * (machine_busy_s() - busy0 - load_cpu) / load_wall)
        time.sleep(0.5)
        final_load = _last(load_log, "LOAD ") or {}
        if not final_load.get("final"):
            raise RuntimeError(f"the load printed no final line; see {load_log}")
        at_end_of_load = _last(node_log, STAT) or prev
        drain_start = time.monotonic()
        while time.monotonic() - drain_start < args.drain_max:
            s = _last(node_log, STAT) or prev
            if s["end"] == s["committed"] and s["t"] > at_end_of_load["t"] + 1:
                break
            time.sleep(0.5)
        drained = _last(node_log, STAT) or prev
        drain_s = time.monotonic() - drain_start
        empty = drained["end"] == drained["committed"]
        accepted_deliveries = 4 * final_load["accepted"]  # four channels a notification
        appended = drained["end"] - base["end"]
        committed = drained["committed"] - base["committed"]
        tail = [(r["t"], float(r["lag"])) for r in rows if r["t"] >= max(0.0, args.duration - 30)]
        trend = _slope(tail)
        delivery_rate = sum(r["delivered_s"] for r in rows[-30:]) / max(1, len(rows[-30:]))
        last15 = [lag for t, lag in tail if t >= args.duration - 15]
        before15 = [lag for t, lag in tail if t < args.duration - 15]
        slack = delivery_rate  # one second of traffic
        bounded = abs(trend) <= 0.02 * max(1.0, delivery_rate) or (bool(last15) and bool(before15) and max(last15) <= max(before15) + slack)
        lost_bus = appended - committed
        lost_ingest = accepted_deliveries - appended
        print("\n" + "=" * 78 + "\nSUMMARY: sustained mixed load\n" + "=" * 78)
        print(f"load: {args.rate:g} operations/s for {args.duration:g}s: {final_load['posts']} POSTs, {final_load['batches']} batches of "
              f"{args.batch}, {final_load['reads']} reads; skipped (every connection busy) {final_load['skipped']}; errors {final_load['errors']}, "
              f"read errors {final_load['read_errors']}; POST p50 {final_load['post_p50']:.1f} ms p99 {final_load['post_p99']:.1f} ms; "
              f"read p50 {final_load['read_p50']:.1f} ms p99 {final_load['read_p99']:.1f} ms")  # fmt: skip
        print(f"accepted {final_load['accepted']} notifications = {accepted_deliveries} deliveries; bus records appended {appended}, "
              f"committed (outcome recorded) {committed} after a drain of {drain_s:.1f}s"
              f"{'' if empty else f' (NOT drained within --drain-max {args.drain_max:g}s: not delivered yet, not necessarily lost)'}")  # fmt: skip
        print(f"LOST: accepted - appended {lost_ingest}, appended - committed {lost_bus} (0 and 0 expected); final lag {drained['end'] - drained['committed']}")
        print(f"lag during the load: max {max((r['lag'] for r in rows), default=0)}, at the end of the load {at_end_of_load['end'] - at_end_of_load['committed']}; "
              f"trend over the last 30 s {trend:+.1f} records/s against {delivery_rate:.0f} delivered/s: "
              f"{'BOUNDED' if bounded else 'GROWING (the rate is above what this node holds)'}")  # fmt: skip
        print(f"server CPU {100 * load_cpu / load_wall:.0f}% of a core over the load ({1e3 * load_cpu / max(1, final_load['accepted']):.2f} ms per "
              f"notification, ingest and delivery); other CPU {other:.0f}%{'  (busy machine)' if other > 25 else ''}")  # fmt: skip
        ok = empty and lost_bus == 0 and lost_ingest == 0 and bounded and final_load["skipped"] == 0 and final_load["errors"] == 0
    except Exception as exc:  # noqa: BLE001 - report, still stop the processes
        ok = False
        print(f"bench_sustained: FAILED: {exc}", file=sys.stderr)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
            load.wait(timeout=10)
        print(server.stop())
    print(f"total wall time {time.monotonic() - started:.0f}s")
    if args.keep_data:
        print(f"bench_sustained: data and logs kept in {tmp_root}")
    else:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_node"]:
        sys.path.insert(0, str(ROOT))
        _node_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["_load"]:
        _load_main(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description="Sustained mixed load at a fixed rate: bus lag per second, nothing lost, lag bounded.")
    parser.add_argument("--rate", type=float, default=40, help="operations/s (default 40: 24 POSTs, 4 batches, 12 reads a second; held on the shared 2-core machine)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument("--batch", type=int, default=10, help="notifications per batch call (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections of the load (default 64)")
    parser.add_argument("--quotas", action="store_true",
                        help="keep the providers' default rate limits (email 1,000 a minute, SMS 100/s): they, not the worker, then cap delivery")
    parser.add_argument("--drain-max", type=float, default=120, help="most seconds to wait for the lag to reach 0 after the load (default 120)")
    parser.add_argument("--data-root", default=None, help="where the temporary data dir goes (default: the system temp dir)")
    parser.add_argument("--keep-data", action="store_true", help="keep the data dir and the logs")
    args = parser.parse_args(argv)
    limits = [
        (0 < args.rate <= 5000 and 0 < args.duration <= 600, "--rate: 0 < r <= 5000; --duration: 0 < s <= 600"),
        (1 <= args.batch <= 1000 and 1 <= args.connections <= 512, "--batch: 1..1000; --connections: 1..512"),
        (0 <= args.drain_max <= 600, "--drain-max: 0..600"),
    ]
    check_limits(parser, limits)
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
