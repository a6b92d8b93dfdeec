"""Priority lanes: POST -> delivered latency of critical notifications, alone and while a bulk backlog drains.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/lanes_bench.py [--duration 10] [--rate 20] [--bulk batches]
    .venv/bin/python loadtests/lanes_bench.py --bulk topic --topic-subscribers 100000   # needs topics (issue 10 item 5)

What one run does (loopback only, every step bounded in time, stops by itself):

1. starts `herald serve --port 0` (the role `all`, one process, a fresh data dir on local disk,
   default settings: lanes, reserves and the seed's rate limits: SMS 100/s);
2. opens one WebSocket session for the probe user and sends **probes**: critical
   notifications to it on `web` and `sms`, `--rate` a second for `--duration` s, each POST
   in its own task at its scheduled instant (the sender keeps its schedule whatever a POST
   takes). Measured per probe: web, POST sent -> its WebSocket frame received; sms, POST
   sent -> `at_ms` of its line in the SMS sandbox file (the provider call's time);
3. phase **reference**: the probes alone;
4. phase **bulk**: the bulk source starts, and `--warmup` s later (a backlog has built up)
   the same probes run again while it keeps going. Bulk source `batches` (default):
   `--bulk-connections` closed-loop posters of POST /v1/notifications/batch, 1,000 items
   each, priority normal, on `web` and `sms` to 1,000 users without a session (the bulk
   lane of both channels the probes use). Bulk source `topic`: subscribes
   `--topic-subscribers` users to one topic (PUT /v1/topics/{topic}/subscribers, 1,000 a
   call) before the phases, then one topic send (`topic` instead of `user_id`, priority
   normal, web and sms) starts the phase: a fan-out of that many per-user deliveries;
5. prints per channel p50, p99 and max of both phases and the ratio bulk / reference, the
   bulk traffic accepted and delivered meanwhile (its backlog at the end of the probes),
   and the server's CPU per phase.

Goal (issue 10 item 6): web p99 < 100 ms while bulk drains; sms no worse than the
reference. The machine is shared: compare the ratios of one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import Server  # noqa: E402
from benchlib import LOOPBACK, machine_busy_s as _machine_busy_s, percentile as _percentile  # noqa: E402

PROBE_USER = "lane-probe"
BATCH_SIZE = 1000
API_KEY = "lanes-bench-key"


def probe_bodies(n: int) -> list[dict[str, Any]]:
    """A critical web notification to the session's user, and a critical SMS to a user of its own (a one-time code):
    one user's deliveries of a channel go one at a time, in order, so SMS probes to one user would queue behind each other."""
    return [
        {"user_id": PROBE_USER, "priority": "critical", "channels": ["web"], "content": {"web": {"title": "code", "body": f"probe {n}"}}},
        {"user_id": f"{PROBE_USER}-{n}", "priority": "critical", "channels": ["sms"], "content": {"sms": {"text": f"code {n}"}},
         "to": {"phone": "+15555550100"}},
    ]


def bulk_item(user: str) -> dict[str, Any]:
    return {
        "user_id": user, "priority": "normal", "channels": ["web", "sms"],
        "content": {"web": {"title": "news", "body": "weekly digest"}, "sms": {"text": "weekly digest"}},
        "to": {"phone": "+15555550199"},
    }


BULK_BATCH = json.dumps({"items": [bulk_item(f"bulk-{i}") for i in range(BATCH_SIZE)]}, separators=(",", ":")).encode()


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent_ms: dict[str, float] = {}  # notification id -> wall ms the POST was sent
        self.failed = 0
        self.late_posts = 0  # POSTs that started more than 5 ms after their scheduled instant (the sender fell behind)
        self.cpu_s = 0.0
        self.busy_s = 0.0
        self.wall_s = 0.0
        self.start_ms = 0.0
        self.end_ms = 0.0
        self.timeline: dict[str, list[float]] = {}


class Bench:
    def __init__(self, server: Server, args: argparse.Namespace) -> None:
        self.server = server
        self.args = args
        self.frames: dict[str, float] = {}  # notification id -> wall ms its WebSocket frame arrived
        self.bulk_batches = 0
        self.bulk_refused = 0
        self.sms_file = Path(args.data_dir) / "sms.jsonl"
        self.before_phase: dict[str, float] = {}
        self.steps_file = Path(args.data_dir).parent / "steps.json"  # loadtests/step_profile.py's output
        self.steps: dict[str, dict[str, Any]] = {}  # phase name -> its per-task step CPU report

    def step_report(self) -> dict[str, Any]:
        """Ask the node's step instrument for what it recorded since it was last asked (SIGUSR1), and read it."""
        assert self.server.proc is not None
        before = self.steps_file.stat().st_mtime_ns if self.steps_file.exists() else 0
        self.server.proc.send_signal(signal.SIGUSR1)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if self.steps_file.exists() and self.steps_file.stat().st_mtime_ns != before:
                return json.loads(self.steps_file.read_text())
            time.sleep(0.02)
        return {}

    def client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        return httpx.AsyncClient(base_url=self.server.url, headers={"Authorization": f"Bearer {self.server.key}"}, timeout=30,
                                 limits=limits)

    async def session(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with self.client() as client:
            token = (await client.post(f"/v1/users/{PROBE_USER}/tokens", json={})).json()["token"]
        url = self.server.url.replace("http://", "ws://") + f"/v1/ws?token={token}"
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({"type": "sync"}))  # a session holds live frames until the client's first frame
            while json.loads(await ws.get_message()).get("type") != "synced":
                pass
            task_status.started()
            try:
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame.get("type") == "notification":
                        self.frames.setdefault(frame["id"], time.time() * 1000)
            except ConnectionClosed:
                return

    async def probes(self, phase: Phase) -> None:
        interval = 1 / self.args.rate
        count = int(self.args.duration * self.args.rate)
        start = trio.current_time()
        phase.start_ms = time.time() * 1000
        async with self.client() as client, trio.open_nursery() as nursery:
            for n in range(count):
                await trio.sleep_until(start + n * interval)
                nursery.start_soon(self._probe, client, phase, n, start + n * interval)
        phase.end_ms = time.time() * 1000

    async def _probe(self, client: httpx.AsyncClient, phase: Phase, n: int, due: float) -> None:
        if trio.current_time() - due > 0.005:
            phase.late_posts += 1
        async with trio.open_nursery() as nursery:
            for body in probe_bodies(n):
                nursery.start_soon(self._post, client, phase, body)

    async def _post(self, client: httpx.AsyncClient, phase: Phase, body: dict[str, Any]) -> None:
        sent = time.time() * 1000
        try:
            response = await client.post("/v1/notifications", json=body)
        except httpx.HTTPError:
            phase.failed += 1
            return
        if response.status_code != 202:
            phase.failed += 1
            return
        phase.sent_ms[response.json()["notification_id"]] = sent

    async def bulk_batches_loop(self, stop: trio.Event) -> None:
        async def poster() -> None:
            async with self.client() as client:
                while not stop.is_set():
                    response = await client.post("/v1/notifications/batch", content=BULK_BATCH,
                                                 headers={"Content-Type": "application/json"})
                    if response.status_code == 202:
                        self.bulk_batches += 1
                    else:
                        self.bulk_refused += 1
                        await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            for _ in range(self.args.bulk_connections):
                nursery.start_soon(poster)

    async def subscribe_topic(self) -> None:
        async with self.client() as client:
            for first in range(0, self.args.topic_subscribers, BATCH_SIZE):
                users = [f"bulk-{i}" for i in range(first, min(first + BATCH_SIZE, self.args.topic_subscribers))]
                response = await client.put(f"/v1/topics/{self.args.topic}/subscribers", json={"user_ids": users})
                if response.status_code >= 300:
                    raise SystemExit(f"lanes_bench: subscribing to the topic failed ({response.status_code}): {response.text[:300]}"
                                     " -- is topics (issue 10 item 5) in this tree?")

    async def topic_send(self) -> None:
        body = {k: v for k, v in bulk_item("x").items() if k not in ("user_id", "to")}
        async with self.client() as client:
            response = await client.post("/v1/notifications", json={**body, "topic": self.args.topic})
            if response.status_code != 202:
                raise SystemExit(f"lanes_bench: the topic send failed ({response.status_code}): {response.text[:300]}")
            self.bulk_batches += 1

    def sms_lines(self) -> list[dict[str, Any]]:
        if not self.sms_file.exists():
            return []
        lines = []
        for raw in self.sms_file.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue  # a line being written
        return lines

    async def run_phase(self, phase: Phase) -> None:
        self.before_phase = dict(self.frames)
        cpu0, busy0, wall0 = self.server.cpu_s(), _machine_busy_s(), time.monotonic()
        await trio.to_thread.run_sync(self.step_report)  # starts the phase's step record afresh
        await self.probes(phase)
        with trio.move_on_after(10):  # the last probes' deliveries (bounded)
            while len(self.frames) < len(phase.sent_ms) // 2 + len(self.before_phase):
                await trio.sleep(0.05)
        self.steps[phase.name] = await trio.to_thread.run_sync(self.step_report)
        phase.cpu_s, phase.busy_s, phase.wall_s = self.server.cpu_s() - cpu0, _machine_busy_s() - busy0, time.monotonic() - wall0

    async def main(self) -> dict[str, Any]:
        if self.args.bulk == "topic":
            await self.subscribe_topic()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.session)
            reference, bulk = Phase("reference"), Phase("bulk")
            await self.run_phase(reference)
            await trio.sleep(1)
            stop = trio.Event()
            if self.args.bulk == "batches":
                nursery.start_soon(self.bulk_batches_loop, stop)
            else:
                await self.topic_send()
            await trio.sleep(self.args.warmup)
            backlog_start = self._bulk_delivered()
            await self.run_phase(bulk)
            stop.set()
            delivered_during = self._bulk_delivered() - backlog_start
            nursery.cancel_scope.cancel()
        for phase in (reference, bulk):  # where the time went, from the statuses of some probes (after the run: no load)
            await self.timelines(phase)
        return {"phases": [reference, bulk], "delivered_during": delivered_during}

    async def timelines(self, phase: Phase, sample: int = 40) -> None:
        """Median ms from the POST to `accepted` (ingress: the id's instant), and from `accepted` to each channel's `sent`."""
        from reactor.clock import parse_iso

        ingress, to_sent = [], {"web": [], "sms": []}
        async with self.client() as client:
            for nid, sent in list(phase.sent_ms.items())[:: max(1, len(phase.sent_ms) // sample)]:
                body = (await client.get(f"/v1/notifications/{nid}")).json()
                created = parse_iso(body["created_at"])
                ingress.append(created - sent)
                for channel, times in to_sent.items():
                    if channel not in body["channels"]:
                        continue
                    at = [parse_iso(a["at"]) for a in body["channels"][channel]["attempts"] if a["status"] == "sent"]
                    if at:
                        times.append(at[0] - created)
        phase.timeline = {"POST -> accepted": ingress, **{f"accepted -> {c} sent": v for c, v in to_sent.items()}}

    def _bulk_delivered(self) -> int:
        return sum(1 for line in self.sms_lines() if str(line.get("user_id", "")).startswith("bulk-"))


def figures(bench: Bench, phase: Phase, sms_at: dict[str, float]) -> dict[str, Any]:
    web = sorted(bench.frames[nid] - sent for nid, sent in phase.sent_ms.items() if nid in bench.frames)
    sms = sorted(sms_at[nid] - sent for nid, sent in phase.sent_ms.items() if nid in sms_at)
    def summary(values: list[float]) -> dict[str, float]:
        return {"p50": _percentile(values, 50), "p99": _percentile(values, 99), "max": values[-1] if values else math.nan,
                "n": len(values)}
    return {"web": summary(web), "sms": summary(sms), "probes": len(phase.sent_ms), "failed": phase.failed,
            "late_posts": phase.late_posts}


def print_steps(steps: dict[str, dict[str, Any]], rows: int) -> None:
    """Per task name, the CPU of its steps (how long each held the loop): max and p99, with bulk beside the reference."""
    loaded, alone = steps.get("bulk", {}).get("tasks", {}), steps.get("reference", {}).get("tasks", {})
    if not loaded:
        print("step CPU: no record (the node ran without loadtests/step_profile.py?)")
        return
    print(f"step CPU per task name (time.thread_time of each task step; ms), the bulk phase's {rows} longest by max:")
    print(f"  {'task':70}{'steps':>9}{'p99':>8}{'max':>8}{'CPU s':>8}   reference p99 / max")
    for name, s in sorted(loaded.items(), key=lambda kv: -kv[1]["max_ms"])[:rows]:
        ref = alone.get(name)
        ref_text = f"{ref['p99_ms']:.2f} / {ref['max_ms']:.2f}" if ref else "-"
        print(f"  {name[-70:]:70}{s['count']:9d}{s['p99_ms']:8.2f}{s['max_ms']:8.2f}{s['total_ms'] / 1000:8.2f}   {ref_text}")
    long = steps.get("bulk", {}).get("long", {})
    if long:
        print("  steps over 2 ms with bulk, by where their task stopped (count, max ms):")
        for where, x in sorted(long.items(), key=lambda kv: -kv[1]["count"] * kv[1]["max_ms"])[:rows]:
            print(f"    {x['count']:5d} {x['max_ms']:7.1f}  {where[:150]}")
    waits, waits_alone = steps.get("bulk", {}).get("waits", {}), steps.get("reference", {}).get("waits", {})
    if waits:
        print("  a turn's wait (the loop's CPU on other tasks between being scheduled and stepping; ms), p50 / p99 / max,"
              " reference -> with bulk:")
        for name in sorted(set(waits) & set(waits_alone), key=lambda n: -waits[n]["count"])[:rows]:
            a, b = waits_alone[name], waits[name]
            print(f"    {name[-60:]:60} {a['p50_ms']:6.2f} / {a['p99_ms']:6.2f} / {a['max_ms']:6.2f} -> "
                  f"{b['p50_ms']:6.2f} / {b['p99_ms']:6.2f} / {b['max_ms']:6.2f}   ({b['count']} turns)")
    for phase in ("reference", "bulk"):
        passes = steps.get(phase, {}).get("gc", {})
        print(f"  garbage collector, {phase}: " + (", ".join(
            f"gen {g}: {x['passes']} passes, {x['total_ms']:.0f} ms, longest {x['max_ms']:.1f} ms" for g, x in passes.items()) or "no pass"))
    longest = steps.get("bulk", {}).get("longest", [])
    if longest:
        print("  longest steps with bulk: " + ", ".join(f"{x['ms']:.1f} ms ({x['task'].rsplit('.', 1)[-1]})" for x in longest[:5]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of probes per phase")
    parser.add_argument("--rate", type=float, default=20.0, help="critical probes a second")
    parser.add_argument("--bulk", choices=["batches", "topic"], default="batches")
    parser.add_argument("--bulk-connections", type=int, default=2, help="closed-loop batch posters (bulk batches)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of bulk before the probes start")
    parser.add_argument("--topic", default="lanes-bench", help="the topic of --bulk topic")
    parser.add_argument("--topic-subscribers", type=int, default=100_000)
    parser.add_argument("--data-root", default=None, help="where the temporary data dir goes (local disk)")
    parser.add_argument("--herald-root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose node runs (another tree for a before/after; this venv's Python)")
    parser.add_argument("--steps", type=int, default=12, help="task names printed in the step CPU table")
    args = parser.parse_args()
    root = args.herald_root.resolve()
    tmp_root = Path(tempfile.mkdtemp(prefix="herald-lanes-", dir=args.data_root))
    args.data_dir = tmp_root / "herald-data"
    # the node under loadtests/step_profile.py: each task step's CPU (time.thread_time), per task name
    argv = [sys.executable, str(Path(__file__).resolve().parent / "step_profile.py"), str(tmp_root / "steps.json"),
            "serve", "--host", LOOPBACK, "--port", "0", "--data-dir", str(args.data_dir)]
    server = Server("herald", argv, tmp_root, tmp_root / "herald.log", env={"HERALD_API_KEY": API_KEY, "PYTHONPATH": str(root)})
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"lanes_bench: node of {root} (commit {commit}); load average {os.getloadavg()[0]:.2f}")
    busy0 = _machine_busy_s()
    time.sleep(1.0)
    background = 100 * (_machine_busy_s() - busy0)
    print(f"lanes_bench: {os.cpu_count()} cores; {background:.0f}% of a core busy before starting; data under {tmp_root}")
    try:
        server.start()
        server.key = server.key or API_KEY
        bench = Bench(server, args)
        result = trio.run(bench.main)
        time.sleep(0.5)  # the sandbox's group commit
        sms_at = {str(line["notification_id"]): float(line["at_ms"]) for line in bench.sms_lines()
                  if str(line.get("user_id", "")).startswith(PROBE_USER)}
        reference, bulk = result["phases"]
        ref, loaded = figures(bench, reference, sms_at), figures(bench, bulk, sms_at)
        source = ("%d batches of %d (web + sms, normal)" % (bench.bulk_batches, BATCH_SIZE) if args.bulk == "batches"
                  else f"one topic send to {args.topic_subscribers:,} subscribers (web + sms, normal)")
        accepted = bench.bulk_batches * BATCH_SIZE if args.bulk == "batches" else args.topic_subscribers
        print(f"probes: {args.rate:g}/s for {args.duration:g} s a phase, critical: web to one WebSocket session's user, sms to a new user each")
        print(f"bulk source: {source}; refused calls {bench.bulk_refused}")
        print(f"bulk sms delivered during the bulk phase's probes: {result['delivered_during']:,} "
              f"(of {accepted:,} accepted: a backlog of {accepted - bench._bulk_delivered():,} sms at the end)")
        print(f"{'':28}{'reference':>14}{'with bulk':>14}{'ratio':>9}")
        for channel in ("web", "sms"):
            for stat in ("p50", "p99", "max"):
                a, b = ref[channel][stat], loaded[channel][stat]
                ratio = b / a if a else math.nan
                print(f"{channel + ' POST->delivered ' + stat:28}{a:11.1f} ms{b:11.1f} ms{ratio:8.2f}x")
            print(f"{channel + ' measured':28}{ref[channel]['n']:14d}{loaded[channel]['n']:14d}")
        for label, key in (("probes accepted", "probes"), ("probes failed", "failed"), ("POSTs behind schedule", "late_posts")):
            print(f"{label:28}{ref[key]:14d}{loaded[key]:14d}")
        for phase in (reference, bulk):
            print(f"server CPU, {phase.name:9}: {100 * phase.cpu_s / phase.wall_s:5.0f}% of a core; "
                  f"machine {100 * phase.busy_s / phase.wall_s:5.0f}% of a core over {phase.wall_s:.1f} s")
        for step in reference.timeline:
            a, b = (sorted(p.timeline[step]) for p in (reference, bulk))
            print(f"{'median ' + step:28}{_percentile(a, 50):11.1f} ms{_percentile(b, 50):11.1f} ms   (from the statuses of {len(b)} probes)")
        goal_web = loaded["web"]["p99"] < 100
        goal_sms = loaded["sms"]["p99"] <= ref["sms"]["p99"] * 1.1 + 5
        print_steps(bench.steps, args.steps)
        print(f"goal web p99 < 100 ms with bulk: {'met' if goal_web else 'NOT met'}; "
              f"sms p99 no worse than the reference (within 10% + 5 ms): {'met' if goal_sms else 'NOT met'}")
        return 0
    finally:
        print(server.stop())
        shutil.rmtree(tmp_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
