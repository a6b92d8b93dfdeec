"""Herald vs a bare ASGI app on Hypercorn's trio worker: POST throughput, latency, WS latency.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/bench.py [--duration 10] [--connections 50] [--rate 200]

What one run does (loopback only, every step bounded in time, stops by itself):

1. starts `herald serve --port 0` (one server process, a temporary data dir on local
   disk, so the bus really fsyncs) and `loadtests/bare_asgi.py` (the reference) as
   two separate processes;
2. POST -> WebSocket frame latency at a fixed rate on the fresh Herald: `--ws-users`
   users each hold a WebSocket (sync first, ack every frame), one paced sender posts to
   them round-robin at `--rate` notifications/s for `--ws-duration` s; a frame that has
   not arrived `--ws-grace` s after the last POST counts as missing;
3. the same POST load against each server, alternately (bare, herald, bare, herald,
   ... `--rounds` times) after a short unmeasured warm-up of each: `--connections`
   keep-alive connections, closed loop, `--duration` s, the same body and headers
   (Herald's API key is sent to both). The load generator is `wrk` in its own process
   (one thread) when it is installed, otherwise a trio+httpx generator in a separate
   Python process (`--loadgen python`, much slower: it saturates its own core first).
   After each Herald run the script waits, bounded by `--drain-max`, until the Herald
   process is idle again (its delivery pipeline drains the backlog the burst left), so
   that backlog does not eat into the next run's CPU; the time it took is reported;
4. prints, per run and as medians: accepted notifications/s (only 202s count),
   p50/p99 latency, non-2xx counts, server CPU (% of one core, and CPU us per request),
   and the ratios herald/bare of the medians; then stops both servers (SIGTERM, wait,
   SIGKILL after a deadline).

`--body all` swaps the web-only body for one that names all four channels (with `to`
addresses); the drain time after each Herald run then shows how far delivery lags ingress.
`--provider-faults` makes Herald's sandbox providers slow or failing with the node's own
fault setting (HERALD_FAULTS, README "Faults on purpose"), e.g. `sms.latency_ms=20` for a
provider that takes 20 ms a call.

The machine has 2 cores shared by the server under test and the load generator; the
figures are noisy: compare ratios, not absolute numbers. Defaults take about 1.5 min.

The client processes are this same file run with a hidden first argument (`_loadgen`,
`_ws`); nothing here imports Herald's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import LOOPBACK, MARK, emit, machine_busy_s, parse_emitted, percentile, process_cpu_s, stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEB_BODY = {"user_id": "bench-u1", "channels": ["web"], "content": {"web": {"title": "t", "body": "b"}}}
ALL_BODY = {
    "user_id": "bench-u1",
    "channels": ["email", "sms", "push", "web"],
    "content": {
        "email": {"subject": "Your code", "text": "Code 1234"},
        "sms": {"text": "Code 1234"},
        "push": {"title": "Code", "body": "1234"},
        "web": {"title": "Code", "body": "1234"},
    },
    "to": {"email": "bench-u1@example.org", "phone": "+15555550100", "device_token": "tok"},
}
# -- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    argv: list[str]
    cwd: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    key: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def start(self, deadline_s: float = 30.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed right after
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        log.close()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            text = self.log_path.read_text(errors="replace")
            found = re.search(r"serving on (http://\S+)", text)
            if found and (self.name != "herald" or "API key in" in text):
                self.url = found.group(1).rstrip("/")
                key_file = re.search(r"API key in (\S+)", text)
                if key_file:
                    self.key = Path(key_file.group(1)).read_text().strip()
                if not self.url.startswith(f"http://{LOOPBACK}:"):
                    raise RuntimeError(f"{self.name} is not on loopback: {self.url}")
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not report its URL within {deadline_s}s; see {self.log_path}")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the server process (all its threads) so far."""
        assert self.proc is not None
        return process_cpu_s(self.proc.pid)

    def rss_mib(self) -> float:
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
        return 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_idle(self, max_s: float, window_s: float = 0.5, threshold: float = 0.05) -> float:
        """Wait until the process used < threshold of a core over two windows in a row; seconds waited."""
        start = time.monotonic()
        calm = 0
        while time.monotonic() - start < max_s and self.alive():
            before = self.cpu_s()
            time.sleep(window_s)
            calm = calm + 1 if (self.cpu_s() - before) / window_s < threshold else 0
            if calm >= 2:
                return time.monotonic() - start - 2 * window_s
        return float("inf") if self.alive() else 0.0

    def stop(self, deadline_s: float = 20.0) -> str:
        return stop_process(self.name, self.proc, deadline_s)


# -- load generators -----------------------------------------------------------------------


def _lua_long_string(text: str) -> str:
    level = "=" * 3
    while f"]{level}]" in text:
        level += "="
    return f"[{level}[{text}]{level}]"


WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {auth}

local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {{}}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {{}}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
    end
  end
  local parts = {{}}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests": %d, "duration_s": %.6f, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f, "mean_ms": %.3f, "statuses": {{%s}}}}\\n',
    summary.requests, summary.duration / 1e6, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000, table.concat(parts, ", ")))
end
"""


def run_load(
    kind: str, url: str, key: str, body: bytes, connections: int, duration: float, workdir: Path, path: str = "/v1/notifications"
) -> dict[str, Any]:
    """One closed-loop POST run in a separate process; returns the parsed result + client CPU."""
    target = f"{url}{path}"
    if kind == "wrk":
        script = workdir / "post.lua"
        script.write_text(WRK_LUA.format(body=_lua_long_string(body.decode()), auth=_lua_long_string(f"Bearer {key}"), mark=MARK))
        argv = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "10s", "-s", str(script), target]
    else:
        params = {"url": target, "key": key, "body": body.decode(), "connections": connections, "duration": duration}
        argv = [sys.executable, str(Path(__file__).resolve()), "_loadgen", json.dumps(params)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0 = machine_busy_s()
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=duration + 60)
    busy1 = machine_busy_s()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    result = parse_emitted(done.stdout)
    result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
    result["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["machine_busy_s"] = busy1 - busy0
    return result


def _loadgen_main(params: dict[str, Any]) -> None:
    """The fallback load generator (a separate process): N connections, closed loop, trio + httpx."""
    import httpx
    import trio

    url, body, n, duration = params["url"], params["body"].encode(), int(params["connections"]), float(params["duration"])
    headers = {"Authorization": f"Bearer {params['key']}", "Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}

    async def main() -> float:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            deadline = trio.current_time() + duration

            async def worker() -> None:
                while trio.current_time() < deadline:
                    t = time.perf_counter()
                    try:
                        response = await client.post(url, content=body, headers=headers)
                    except httpx.TimeoutException:
                        errors["timeout"] += 1
                        continue
                    except httpx.ConnectError:
                        errors["connect"] += 1
                        await trio.sleep(0.01)
                        continue
                    except httpx.HTTPError:
                        errors["read"] += 1
                        continue
                    latencies.append(time.perf_counter() - t)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(worker)
            return time.perf_counter() - start

    elapsed = trio.run(main)
    latencies.sort()
    emit({
        "requests": len(latencies), "duration_s": elapsed,
        "connect_errors": errors["connect"], "read_errors": errors["read"], "write_errors": errors["write"], "timeouts": errors["timeout"],
        "p50_ms": percentile(latencies, 50) * 1e3, "p90_ms": percentile(latencies, 90) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3, "max_ms": (latencies[-1] if latencies else 0) * 1e3,
        "mean_ms": (statistics.fmean(latencies) if latencies else 0) * 1e3,
        "statuses": statuses,
    })  # fmt: skip


# -- WebSocket latency at a fixed rate -------------------------------------------------------


def run_ws(url: str, key: str, users: int, rate: float, duration: float, grace: float, prefix: str, ack: bool) -> dict[str, Any]:
    params = {
        "url": url,
        "key": key,
        "users": users,
        "rate": rate,
        "duration": duration,
        "grace": grace,
        "prefix": prefix,
        "ack": ack,
    }
    argv = [sys.executable, str(Path(__file__).resolve()), "_ws", json.dumps(params)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=duration + grace + 90)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"ws client failed ({done.returncode}): {done.stderr[-3000:]}")
    result = parse_emitted(done.stdout)
    result["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def _ws_main(params: dict[str, Any]) -> None:
    """The WebSocket client (a separate process): K live sessions, one paced sender."""
    import httpx
    import trio
    from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

    base = params["url"]
    ws_base = base.replace("http://", "ws://")
    n_users, rate, duration, grace = (
        int(params["users"]),
        float(params["rate"]),
        float(params["duration"]),
        float(params["grace"]),
    )
    users = [f"{params['prefix']}-{i}" for i in range(n_users)]
    sent_at: dict[str, float] = {}  # notification id -> perf_counter when its POST started
    post_ms: list[float] = []
    recv_at: dict[str, float] = {}  # notification id -> perf_counter when its frame arrived
    counters = {"duplicates": 0, "other_frames": 0, "closed": 0, "post_errors": 0, "synced": 0, "max_send_lag_ms": 0.0}
    statuses: dict[int, int] = {}
    close_reasons: list[str] = []

    async def main() -> None:
        headers = {"Authorization": f"Bearer {params['key']}"}
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=10) as client:
            tokens = []
            for user in users:
                response = await client.post(f"/v1/users/{user}/tokens", json={})
                response.raise_for_status()
                tokens.append(response.json()["token"])
            all_synced = trio.Event()

            async def session(token: str) -> None:
                try:
                    async with open_websocket_url(f"{ws_base}/v1/ws?token={token}") as ws:
                        await ws.send_message('{"type":"sync"}')
                        while True:
                            message = await ws.get_message()
                            now = time.perf_counter()
                            frame = json.loads(message)
                            kind = frame.get("type")
                            if kind == "notification":
                                nid = frame["id"]
                                if nid in recv_at:
                                    counters["duplicates"] += 1
                                else:
                                    recv_at[nid] = now
                                if params["ack"]:
                                    await ws.send_message(json.dumps({"type": "ack", "id": nid}))
                            elif kind == "synced":
                                counters["synced"] += 1
                                if counters["synced"] == n_users:
                                    all_synced.set()
                            else:
                                counters["other_frames"] += 1
                except (ConnectionClosed, HandshakeError, OSError) as exc:
                    counters["closed"] += 1
                    close_reasons.append(repr(exc)[:200])

            async def post(i: int) -> None:
                body = {"user_id": users[i % n_users], "channels": ["web"], "content": {"web": {"title": f"n{i}", "body": "b"}}}
                t = time.perf_counter()
                try:
                    response = await client.post("/v1/notifications", json=body)
                except httpx.HTTPError:
                    counters["post_errors"] += 1
                    return
                post_ms.append((time.perf_counter() - t) * 1e3)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    sent_at[response.json()["notification_id"]] = t

            async with trio.open_nursery() as nursery:
                for token in tokens:
                    nursery.start_soon(session, token)
                with trio.fail_after(30):
                    await all_synced.wait()
                total = int(rate * duration)
                t0 = trio.current_time() + 0.05
                async with trio.open_nursery() as posts:
                    for i in range(total):
                        due = t0 + i / rate
                        await trio.sleep_until(due)
                        counters["max_send_lag_ms"] = max(counters["max_send_lag_ms"], (trio.current_time() - due) * 1e3)
                        posts.start_soon(post, i)
                with trio.move_on_after(grace):
                    while any(nid not in recv_at for nid in sent_at):
                        await trio.sleep(0.02)
                nursery.cancel_scope.cancel()

    start = time.perf_counter()
    trio.run(main)
    latencies = sorted((recv_at[nid] - t) * 1e3 for nid, t in sent_at.items() if nid in recv_at)
    post_ms.sort()
    emit({
        "users": n_users, "rate": rate, "duration_s": duration, "sent": int(rate * duration), "accepted": len(sent_at),
        "statuses": statuses, "post_errors": counters["post_errors"], "frames": len(latencies),
        "missing": sum(1 for nid in sent_at if nid not in recv_at), "duplicates": counters["duplicates"],
        "unknown_frames": sum(1 for nid in recv_at if nid not in sent_at), "other_frames": counters["other_frames"],
        "sessions_closed_early": counters["closed"], "close_reasons": close_reasons[:5],
        "max_send_lag_ms": counters["max_send_lag_ms"],
        "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90), "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "post_p50_ms": percentile(post_ms, 50), "post_p99_ms": percentile(post_ms, 99),
        "wall_s": time.perf_counter() - start,
    })  # fmt: skip


# -- the driver --------------------------------------------------------------------------------


@dataclass
class Run:
    server: str
    round: int
    result: dict[str, Any]
    server_cpu_s: float
    drain_s: float = 0.0
    drain_cpu_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return int(self.result["statuses"].get(202, 0))

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.result["duration_s"]

    @property
    def non_202(self) -> dict[int, int]:
        return {k: v for k, v in self.result["statuses"].items() if k != 202}

    @property
    def other_cpu_pct(self) -> float:
        """CPU the machine spent on anything but this server and the load generator (noise), % of a core."""
        r = self.result
        return max(0.0, 100 * (r["machine_busy_s"] - self.server_cpu_s - r["client_cpu_s"]) / r["duration_s"])

    @property
    def errors(self) -> int:
        r = self.result
        return int(r["connect_errors"] + r["read_errors"] + r["write_errors"] + r["timeouts"])

    def line(self) -> str:
        r = self.result
        cpu_pct = 100 * self.server_cpu_s / r["duration_s"]
        per_req = 1e6 * self.server_cpu_s / max(1, r["requests"])
        drain = ""
        if self.server == "herald":
            drain = f"  drain {self.drain_s:.1f}s (+{1e6 * self.drain_cpu_s / max(1, self.accepted):.0f} us CPU/req)"
        return (
            f"  round {self.round} {self.server:<6} {self.accepted_per_s:8.0f} accepted/s  p50 {r['p50_ms']:7.2f} ms  "
            f"p99 {r['p99_ms']:7.2f} ms  non-202 {self.non_202 or 0}  socket errors {self.errors}  "
            f"server CPU {cpu_pct:3.0f}% ({per_req:.0f} us/req)  client CPU {100 * r['client_cpu_s'] / r['duration_s']:3.0f}%  other CPU {self.other_cpu_pct:3.0f}%{drain}"
        )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def driver(args: argparse.Namespace) -> int:
    started = time.monotonic()
    body = json.dumps(ALL_BODY if args.body == "all" else WEB_BODY, separators=(",", ":")).encode()
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
        if loadgen == "python":
            print("bench: wrk is not installed (apt-get install -y wrk); falling back to the trio+httpx load generator,")
            print("bench: which saturates its own core long before Hypercorn does: the ratios are less meaningful.")
    elif loadgen == "wrk" and not shutil.which("wrk"):
        print("bench: --loadgen wrk but wrk is not on PATH: apt-get install -y wrk", file=sys.stderr)
        return 2
    herald_bin = BIN / "herald"
    if not herald_bin.exists():
        found = shutil.which("herald")
        if not found:
            print(
                f"bench: no herald console script next to {sys.executable}; install the project (pip install -e .)",
                file=sys.stderr,
            )
            return 2
        herald_bin = Path(found)

    tmp_root = Path(tempfile.mkdtemp(prefix="herald-bench-", dir=args.data_root))
    herald = Server("herald", [str(herald_bin), "serve", "--host", LOOPBACK, "--port", "0", "--data-dir", str(tmp_root / "herald-data")],
                    tmp_root, tmp_root / "herald.log",
                    env={"HERALD_FAULTS": args.provider_faults} if args.provider_faults else {})  # fmt: skip
    bare = Server(
        "bare",
        [sys.executable, str(ROOT / "loadtests" / "bare_asgi.py"), "--host", LOOPBACK, "--port", "0"],
        ROOT,
        tmp_root / "bare.log",
    )
    servers = {"bare": bare, "herald": herald}
    runs: list[Run] = []
    ws: dict[str, Any] | None = None
    stops: list[str] = []
    ok = True
    print(f"bench: {os.cpu_count()} cores shared by servers and load generator; load generator: {loadgen}; data under {tmp_root}")
    if args.provider_faults:
        print(f"bench: Herald's sandbox providers run with the faults {args.provider_faults} (HERALD_FAULTS)")
    busy0 = machine_busy_s()
    time.sleep(1.0)
    background = 100 * (machine_busy_s() - busy0)
    if background > 20:
        print(f"bench: WARNING: the machine is already busy ({background:.0f}% of a core before starting): figures will be noisy")
    try:
        herald.start()
        bare.start()
        print(f"bench: herald pid {herald.proc.pid} on {herald.url}; bare pid {bare.proc.pid} on {bare.url}")  # type: ignore[union-attr]

        if args.ws_duration > 0:
            print(
                f"bench: WS latency: {args.ws_users} sessions, {args.rate:g} notifications/s for {args.ws_duration:g}s ...",
                flush=True,
            )
            cpu0 = herald.cpu_s()
            busy0 = machine_busy_s()
            ws = run_ws(herald.url, herald.key, args.ws_users, args.rate, args.ws_duration, args.ws_grace, "ws", not args.no_ack)
            server_cpu = herald.cpu_s() - cpu0
            ws["server_cpu_pct"] = 100 * server_cpu / ws["wall_s"]
            ws["other_cpu_pct"] = max(0.0, 100 * (machine_busy_s() - busy0 - server_cpu - ws["client_cpu_s"]) / ws["wall_s"])
            print(f"  POST->frame p50 {ws['p50_ms']:.2f} ms  p99 {ws['p99_ms']:.2f} ms  max {ws['max_ms']:.2f} ms  "
                  f"frames {ws['frames']}/{ws['accepted']} (missing {ws['missing']}, duplicates {ws['duplicates']})  "
                  f"POST p50 {ws['post_p50_ms']:.2f} ms p99 {ws['post_p99_ms']:.2f} ms  statuses {ws['statuses']}  "
                  f"sessions closed early {ws['sessions_closed_early']}  sender lag max {ws['max_send_lag_ms']:.1f} ms  "
                  f"server CPU {ws['server_cpu_pct']:.0f}%  other CPU {ws['other_cpu_pct']:.0f}%")  # fmt: skip
            herald.wait_idle(args.drain_max)

        if args.warmup > 0:
            for name in ("bare", "herald"):
                server = servers[name]
                run_load(loadgen, server.url, herald.key, body, args.connections, args.warmup, tmp_root)
                server.wait_idle(args.drain_max)
            print(f"bench: warmed up each server for {args.warmup:g}s (not counted)")

        print(f"bench: POST /v1/notifications, {args.connections} connections, {args.duration:g}s per run, "
              f"order {' '.join(['bare herald'] * args.rounds)}", flush=True)  # fmt: skip
        for rnd in range(1, args.rounds + 1):
            for name in ("bare", "herald"):
                server = servers[name]
                cpu0 = server.cpu_s()
                result = run_load(loadgen, server.url, herald.key, body, args.connections, args.duration, tmp_root)
                run = Run(name, rnd, result, server.cpu_s() - cpu0)
                if not server.alive():
                    raise RuntimeError(f"{name} died during the run; see {server.log_path}")
                cpu1 = server.cpu_s()
                run.drain_s = server.wait_idle(args.drain_max)
                run.drain_cpu_s = server.cpu_s() - cpu1
                runs.append(run)
                print(run.line(), flush=True)
    except Exception as exc:  # noqa: BLE001 - report what we have, still stop the servers
        ok = False
        print(f"bench: FAILED: {exc}", file=sys.stderr)
    finally:
        rss = {name: s.rss_mib() for name, s in servers.items()}
        for server in (bare, herald):
            stops.append(server.stop())

    _summary(args, loadgen, body, runs, ws, stops, rss, time.monotonic() - started, tmp_root)
    if args.keep_data:
        print(f"bench: data and server logs kept in {tmp_root}")
    else:
        shutil.rmtree(tmp_root, ignore_errors=True)
    herald_bad = sum(sum(r.non_202.values()) + r.errors for r in runs if r.server == "herald")
    return 0 if ok and herald_bad == 0 and (ws is None or ws["missing"] == 0) else 1


def _summary(
    args: argparse.Namespace, loadgen: str, body: bytes, runs: list[Run], ws: dict[str, Any] | None,
    stops: list[str], rss: dict[str, float], elapsed: float, tmp_root: Path,
) -> None:  # fmt: skip
    by = {name: [r for r in runs if r.server == name] for name in ("bare", "herald")}
    med = {
        name: {
            "rps": _median([r.accepted_per_s for r in rs]),
            "p50": _median([r.result["p50_ms"] for r in rs]),
            "p99": _median([r.result["p99_ms"] for r in rs]),
            "cpu_us": _median([1e6 * r.server_cpu_s / max(1, r.result["requests"]) for r in rs]),
            "cpu_pct": _median([100 * r.server_cpu_s / r.result["duration_s"] for r in rs]),
        }
        for name, rs in by.items()
    }
    out = ["", "=" * 78, "SUMMARY (herald vs bare ASGI on Hypercorn's trio worker; loopback; 2 cores shared)", "=" * 78]
    out.append(f"load: {loadgen}, {args.connections} connections, {args.duration:g}s per run, {args.rounds} round(s), "
               f"order {' -> '.join(['bare -> herald'] * args.rounds)}; body {len(body)} bytes: {body.decode()}")  # fmt: skip
    for name in ("bare", "herald"):
        rs = by[name]
        if not rs:
            continue
        m = med[name]
        non = {}
        for r in rs:
            for k, v in r.non_202.items():
                non[k] = non.get(k, 0) + v
        out.append(
            f"{name:<6}: median {m['rps']:7.0f} accepted/s (runs: {', '.join(f'{r.accepted_per_s:.0f}' for r in rs)})  "
            f"p50 {m['p50']:.2f} ms  p99 {m['p99']:.2f} ms  server CPU {m['cpu_pct']:.0f}% of a core, {m['cpu_us']:.0f} us/req  "
            f"accepted {sum(r.accepted for r in rs)}  non-202 {non or 0}  socket errors {sum(r.errors for r in rs)}"
        )
    if by["herald"]:
        drains = [r.drain_s for r in by["herald"]]
        out.append(f"herald: backlog drained after each run in {', '.join(f'{d:.1f}' for d in drains)} s "
                   f"(delivery pipeline catching up; bounded by --drain-max {args.drain_max:g}s); RSS at the end {rss['herald']:.0f} MiB")  # fmt: skip
    if by["herald"] and by["bare"] and med["bare"]["rps"] > 0 and med["bare"]["p50"] > 0:
        out.append(
            f"RATIO herald/bare: throughput {med['herald']['rps'] / med['bare']['rps']:.2f} (target >= 0.5)  "
            f"p50 latency {med['herald']['p50'] / med['bare']['p50']:.2f}x  p99 latency {med['herald']['p99'] / med['bare']['p99']:.2f}x  "
            f"CPU per request {med['herald']['cpu_us'] / max(1e-9, med['bare']['cpu_us']):.2f}x"
        )
        if med["bare"]["cpu_pct"] < 80:
            out.append(f"WARNING: the bare server used only {med['bare']['cpu_pct']:.0f}% of a core: the load generator, not the server, "
                       "was the limit, so the ratio is overstated (use wrk, or more --connections)")  # fmt: skip
    if ws is not None:
        out.append(
            f"WS: {ws['users']} sessions, {ws['rate']:g}/s for {ws['duration_s']:g}s: POST->frame p50 {ws['p50_ms']:.2f} ms  "
            f"p90 {ws['p90_ms']:.2f} ms  p99 {ws['p99_ms']:.2f} ms  max {ws['max_ms']:.2f} ms; frames {ws['frames']}/{ws['accepted']} "
            f"accepted of {ws['sent']} sent; MISSING {ws['missing']}; non-202 {({k: v for k, v in ws['statuses'].items() if k != '202'}) or 0}; "
            f"POST p50 {ws['post_p50_ms']:.2f} ms p99 {ws['post_p99_ms']:.2f} ms; server CPU {ws['server_cpu_pct']:.0f}%, "
            f"other CPU {ws['other_cpu_pct']:.0f}%{' (disturbed: rerun)' if ws['other_cpu_pct'] > 25 or ws['max_send_lag_ms'] > 100 else ''}"
        )
    if runs:
        others = [r.other_cpu_pct for r in runs]
        noisy = [f"{r.server} r{r.round}" for r in runs if r.other_cpu_pct > 25]
        out.append(f"noise: CPU used by other processes during the runs: median {_median(others):.0f}%, max {max(others):.0f}% of a core"
                   + (f"; suspect runs (>25%): {', '.join(noisy)}: rerun on a quieter machine" if noisy else ""))  # fmt: skip
    out.extend(stops)
    out.append(f"total wall time {elapsed:.0f}s")
    out.append("=" * 78)
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_loadgen"]:
        _loadgen_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["_ws"]:
        _ws_main(json.loads(argv[1]))
        return 0
    parser = argparse.ArgumentParser(
        description="Herald vs bare ASGI (Hypercorn trio worker): POST throughput and latency, WS latency at a fixed rate.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            Everything runs on 127.0.0.1 and stops by itself; the defaults take about 1.5 minutes.
            Exit status: 0 if every Herald POST was answered 202 and no WS frame was missing."""),
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=10, help="seconds of each measured POST run (default 10)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent keep-alive connections (default 50)")
    parser.add_argument("--rate", type=float, default=200, help="notifications/s of the WS latency test (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="bare+herald pairs of runs (default 2); medians are reported")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds of load on each server first (default 2)")
    parser.add_argument("--ws-duration", type=float, default=10, help="seconds of the WS test (default 10; 0 skips it)")
    parser.add_argument("--ws-users", type=int, default=50, help="WebSocket sessions, one user each (default 50)")
    parser.add_argument(
        "--ws-grace", type=float, default=5, help="seconds to wait for late frames after the last POST (default 5)"
    )
    parser.add_argument("--no-ack", action="store_true", help="do not ack frames in the WS test")
    parser.add_argument(
        "--body",
        choices=["web", "all"],
        default="web",
        help="POST body of the throughput runs: web only (default, 84 bytes) or all four channels with addresses",
    )
    parser.add_argument(
        "--loadgen", choices=["auto", "wrk", "python"], default="auto", help="auto: wrk if installed, else python"
    )
    parser.add_argument(
        "--drain-max", type=float, default=20, help="most seconds to wait for a server to go idle after a run (default 20)"
    )
    parser.add_argument(
        "--provider-faults", default="", metavar="SPEC",
        help='sandbox provider faults for Herald, as HERALD_FAULTS: "sms.latency_ms=20,email.error_rate=0.1" (default none)',
    )
    parser.add_argument("--data-root", default=None, help="where the temporary data dir goes (default: the system temp dir)")
    parser.add_argument("--keep-data", action="store_true", help="keep the data dir and server logs")
    args = parser.parse_args(argv)
    limits = [
        (0 < args.duration <= 120, "--duration: 0 < s <= 120"),
        (1 <= args.connections <= 1000, "--connections: 1..1000"),
        (0 < args.rate <= 5000, "--rate: 0 < r <= 5000"),
        (1 <= args.rounds <= 10, "--rounds: 1..10"),
        (0 <= args.ws_duration <= 120, "--ws-duration: 0..120"),
        (1 <= args.ws_users <= 2000, "--ws-users: 1..2000"),
        (
            0 <= args.warmup <= 30 and 0 <= args.ws_grace <= 60 and 0 <= args.drain_max <= 120,
            "--warmup/--ws-grace/--drain-max out of range",
        ),
    ]
    for good, message in limits:
        if not good:
            parser.error(message)
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
