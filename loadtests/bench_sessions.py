"""Idle WebSocket sessions: KiB per session on Herald vs bare servers, and delivery to all of them.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/bench_sessions.py [--sessions 10000] [--servers bare,herald,trio-websocket]

For each server, in turn (one at a time, each a process of its own, loopback only):

1. starts it on a free port: `herald serve --port 0` (a temporary data dir), or a reference:
   `loadtests/bare_asgi.py` (a bare ASGI WebSocket echo on Hypercorn's trio worker, the
   server Herald runs on) or `loadtests/bare_trio_ws.py` (an echo on trio-websocket's server);
2. starts client processes (`--clients`, each holding at most 2,500 sessions; the script
   raises RLIMIT_NOFILE to its hard limit, which they inherit). For Herald they first mint
   one subscriber token per user (`POST /v1/users/{id}/tokens`, one user per session);
3. reads the server's RSS (/proc/<pid>/status VmRSS), has the clients open half of the
   sessions, reads it again, opens the other half, waits `--settle` s and reads it again.
   A session is open once the server answered its first frame: Herald's `synced` (the
   client sends `{"type":"sync"}` as a browser does) or the echo of it. Each session then
   idles, sending `{"type":"ping"}` every 30 s as README asks of clients. KiB per session
   = RSS growth / sessions, over all of them and over the second half alone (marginal:
   without one-time costs such as code paths run the first time);
4. Herald only, **delivery**: a poster process sends one web notification to every user
   (`POST /v1/notifications`, `--post-connections` keep-alive connections, as fast as the
   node takes them) while the clients ack each frame; printed: the time from the first 202
   to the last frame received, the POST window, POST -> frame p50/p99, frames missing
   after `--grace` s, and the RSS after (each session has now sent a frame).
   `--broadcast topic` then subscribes every user to one topic (PUT of 1,000 user ids at a
   time) and sends it ONE web notification: printed beside the per-user POSTs above (the
   reference, same run): 202 -> first frame, p50 and last frame, frames missing and
   duplicates, and the server's CPU seconds from the POST to the last frame (issue 10
   item 7: the last frame within 1 s of the 202);
5. stops the server with every session open (SIGTERM, SIGKILL after `--stop-deadline` s; the time it took is
   printed), then the clients.

`--deflate` makes the clients offer permessage-deflate as browsers do (the server then
keeps zlib streams per session once a frame is compressed). `--tracemalloc N` runs each
server under tracemalloc instead, diffs snapshots taken around opening N sessions and
prints where the memory went, by line and by library (RSS figures are then meaningless).

Every step has a deadline; the script stops by itself. The client processes are this
file run with a hidden first argument (`_client`, `_poster`, `_traced`); only `_traced`
imports Herald (to run it under tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import LOOPBACK, MARK, RawHttp, emit, percentile, process_cpu_s, stop_process  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
BIN = Path(sys.executable).parent
PER_CLIENT = 2500  # sessions one client process holds at most
OPEN_IN_FLIGHT = 64  # handshakes one client process has in flight at once
PING_S = 30.0
SERVERS = ("bare", "herald", "trio-websocket")


# -- the WebSocket client process ---------------------------------------------------------------


def _client_main(params: dict[str, Any]) -> None:
    """Hold sessions for users [first, first + count) of `prefix`; commands on stdin, answers on stdout.

    Herald: mints a token per user at start (prints `TOKENS n`). `open K` opens the next K
    sessions (prints `OPENED ok failed` when each has been answered or has failed);
    `report` prints the results as a BENCHJSON line; `close` (or EOF) ends the process.
    Prints `ALLFRAMES` once every open session has received a notification.
    """
    import trio
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage
    from wsproto.extensions import PerMessageDeflate

    host, port = params["host"], int(params["port"])
    herald = params["kind"] == "herald"
    first, count, prefix = int(params["first"]), int(params["count"]), params["prefix"]
    ack, deflate = bool(params["ack"]), bool(params["deflate"])
    tokens: dict[int, str] = {}
    received: dict[int, float] = {}  # user index -> time.monotonic() its first notification arrived
    opened: set[int] = set()
    counters = {"failed": 0, "closed_early": 0, "duplicates": 0, "errors": 0}
    reasons: list[str] = []
    cursor = first

    def say(line: str) -> None:
        print(line, flush=True)

    async def mint() -> None:
        queue = list(range(first, first + count))

        async def worker() -> None:
            http = RawHttp(host, port, params["key"])
            try:
                while queue:
                    i = queue.pop()
                    status, body = await http.request("POST", f"/v1/users/{prefix}-{i}/tokens", b"{}")
                    if status != 201 and status != 200:
                        raise RuntimeError(f"token for {prefix}-{i}: {status} {body[:200]!r}")
                    tokens[i] = json.loads(body)["token"]
            finally:
                await http.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(worker)

    async def session(i: int, admitted: trio.Semaphore, answered: trio.Event) -> None:
        target = f"/v1/ws?token={tokens[i]}" if herald else "/"
        ws = WSConnection(ConnectionType.CLIENT)
        parts: list[str] = []
        next_ping = trio.current_time() + PING_S * random.random()
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            counters["failed"] += 1
            reasons.append(f"connect: {exc!r}"[:200])
            answered.set()
            return
        async with stream:
            try:
                extensions = [PerMessageDeflate()] if deflate else []
                await stream.send_all(ws.send(Request(host=f"{host}:{port}", target=target, extensions=extensions)))
                while True:
                    data = None
                    with trio.move_on_at(next_ping):
                        data = await stream.receive_some(65536)
                    if data is None:
                        next_ping += PING_S
                        if i in opened:
                            await stream.send_all(ws.send(TextMessage('{"type":"ping"}')))
                        continue
                    if not data:
                        raise ConnectionError("EOF")
                    ws.receive_data(data)
                    for event in ws.events():
                        if isinstance(event, AcceptConnection):
                            await stream.send_all(ws.send(TextMessage('{"type":"sync"}')))
                        elif isinstance(event, RejectConnection):
                            raise ConnectionError(f"handshake refused: {event.status_code}")
                        elif isinstance(event, Ping):
                            await stream.send_all(ws.send(event.response()))
                        elif isinstance(event, CloseConnection):
                            raise ConnectionError(f"closed by the server: {event.code} {event.reason}")
                        elif isinstance(event, TextMessage):
                            parts.append(event.data)
                            if event.message_finished:
                                message, parts[:] = "".join(parts), []
                                await on_message(i, message, stream, ws, answered)
            except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
                if i in opened:
                    counters["closed_early"] += 1
                    opened.discard(i)
                else:
                    counters["failed"] += 1
                    answered.set()
                reasons.append(f"{prefix}-{i}: {exc!r}"[:200])

    async def on_message(i: int, message: str, stream: Any, ws: Any, answered: trio.Event) -> None:
        frame = json.loads(message)
        kind = frame.get("type")
        if i not in opened and kind in ("synced", "sync"):  # Herald's answer, or the echo of the sync
            opened.add(i)
            answered.set()
        elif kind == "notification":
            if i in received:
                counters["duplicates"] += 1
            else:
                received[i] = time.monotonic()
                if len(received) == len(opened):
                    say("ALLFRAMES")
            if ack:
                await stream.send_all(ws.send(TextMessage(json.dumps({"type": "ack", "id": frame["id"]}))))
        elif kind == "error":
            counters["errors"] += 1
            reasons.append(f"{prefix}-{i}: error frame {message[:150]}")

    async def open_next(nursery: trio.Nursery, k: int) -> None:
        nonlocal cursor
        admitted = trio.Semaphore(OPEN_IN_FLIGHT)
        failed_before = counters["failed"]
        opened_before = len(opened)
        waits = []
        for i in range(cursor, min(cursor + k, first + count)):
            await admitted.acquire()
            answered = trio.Event()
            waits.append(answered)
            nursery.start_soon(session, i, admitted, answered)

            async def release(answered: trio.Event = answered) -> None:
                await answered.wait()
                admitted.release()

            nursery.start_soon(release)
        cursor = min(cursor + k, first + count)
        for answered in waits:
            await answered.wait()
        say(f"OPENED {len(opened) - opened_before} {counters['failed'] - failed_before}")

    async def main() -> None:
        if herald:
            await mint()
        say(f"TOKENS {len(tokens)}")
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        async with trio.open_nursery() as nursery:
            while True:
                data = await stdin.receive_some(4096)
                if not data:
                    break
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                stop = False
                for raw in lines:
                    command = raw.decode().split()
                    if command[:1] == ["open"]:
                        nursery.start_soon(open_next, nursery, int(command[1]))
                    elif command[:1] == ["report"]:
                        emit({
                            "opened": len(opened), "received": {str(i): t for i, t in received.items()},
                            **counters, "reasons": reasons[:5],
                        })  # fmt: skip
                    elif command[:1] == ["reset"]:  # a second broadcast follows: its frames counted alone
                        received.clear()
                        counters["duplicates"] = 0
                        say("RESET")
                    elif command[:1] == ["close"]:
                        stop = True
                if stop:
                    break
            nursery.cancel_scope.cancel()

    trio.run(main)


# -- the poster process -------------------------------------------------------------------------


def _poster_main(params: dict[str, Any]) -> None:
    """One web notification per user [0, users), over `connections` keep-alive connections, as fast as answered."""
    import trio

    host, port, prefix = params["host"], int(params["port"]), params["prefix"]
    queue = list(range(int(params["users"]) - 1, -1, -1))
    results: dict[str, list[float]] = {}  # user index -> [sent at, answered at, status]
    failures: list[str] = []

    async def worker() -> None:
        http = RawHttp(host, port, params["key"])
        try:
            while queue:
                i = queue.pop()
                body = json.dumps({"user_id": f"{prefix}-{i}", "channels": ["web"], "content": {"web": {"title": f"n{i}", "body": "b"}}})
                sent = time.monotonic()
                try:
                    status, _ = await http.request("POST", "/v1/notifications", body.encode())
                except (OSError, ConnectionError, trio.BrokenResourceError) as exc:
                    failures.append(f"{i}: {exc!r}"[:200])
                    http = RawHttp(host, port, params["key"])
                    continue
                results[str(i)] = [sent, time.monotonic(), status]
        finally:
            await http.aclose()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(int(params["connections"])):
                nursery.start_soon(worker)

    trio.run(main)
    emit({"results": results, "failures": failures[:5], "failed": len(failures)})


# -- a server under tracemalloc (imports what it runs) ------------------------------------------


def _traced_main(argv: list[str]) -> None:
    """`_traced DUMP_PREFIX FRAMES herald|bare|trio-websocket ARGS...`: run the server; SIGUSR1 dumps a snapshot."""
    import runpy
    import tracemalloc

    prefix, frames, what, *rest = argv
    tracemalloc.start(int(frames))
    dumps = [0]

    def dump(_signum: int, _frame: Any) -> None:
        dumps[0] += 1
        tracemalloc.take_snapshot().dump(f"{prefix}.{dumps[0]}")
        print(f"traced: snapshot {prefix}.{dumps[0]}", flush=True)

    signal.signal(signal.SIGUSR1, dump)
    if what == "herald":
        sys.path.insert(0, str(ROOT))
        sys.argv = ["herald", *rest]
        runpy.run_module("actors.cli", run_name="__main__")
    else:
        script = {"bare": "bare_asgi.py", "trio-websocket": "bare_trio_ws.py"}[what]
        sys.argv = [script, *rest]
        runpy.run_path(str(ROOT / "loadtests" / script), run_name="__main__")


def _profiled_main(argv: list[str]) -> None:
    """`_profiled OUT ARGS...`: `herald ARGS...` where SIGUSR1 starts a cProfile of the event loop's thread, SIGUSR2 writes it to OUT."""
    import cProfile
    import runpy

    import gc

    out, *rest = argv
    profiler = cProfile.Profile()
    collections: dict[str, Any] = {"on": False, "t0": 0.0, "s": [0.0, 0.0, 0.0], "n": [0, 0, 0]}

    def timed(phase: str, info: dict[str, int]) -> None:  # the garbage collector's own time, per generation
        if not collections["on"]:
            return
        if phase == "start":
            collections["t0"] = time.perf_counter()
        else:
            collections["s"][info["generation"]] += time.perf_counter() - collections["t0"]
            collections["n"][info["generation"]] += 1

    gc.callbacks.append(timed)

    def start(_signum: int, _frame: Any) -> None:
        if os.environ.get("BENCH_GC_FREEZE"):  # an experiment: what the collector's full passes cost the broadcast
            gc.freeze()
        collections["on"] = True
        profiler.enable()

    def dump(_signum: int, _frame: Any) -> None:
        profiler.disable()
        collections["on"] = False
        profiler.dump_stats(out)
        gcs = ", ".join(f"gen{g}: {collections['n'][g]} in {collections['s'][g]:.2f}s" for g in range(3))
        Path(f"{out}.gc.txt").write_text(f"garbage collections meanwhile: {gcs}\n")  # beside the profile

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    sys.path.insert(0, str(ROOT))
    sys.argv = ["herald", *rest]
    runpy.run_module("actors.cli", run_name="__main__")


# -- the driver ---------------------------------------------------------------------------------


@dataclass
class ServerProc:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    key: str = ""

    def _spawn(self) -> None:
        """Start the server, its output to the log file."""
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    async def start(self, deadline_s: float = 60.0) -> None:
        import trio

        await trio.to_thread.run_sync(self._spawn)
        with trio.move_on_after(deadline_s):
            while True:
                text = await trio.Path(self.log_path).read_text(errors="replace")
                found = re.search(r"serving on (http://\S+)", text)
                if found and (self.name != "herald" or "API key in" in text):
                    self.url = found.group(1).rstrip("/")
                    key_file = re.search(r"API key in (\S+)", text)
                    if key_file:
                        self.key = (await trio.Path(key_file.group(1)).read_text()).strip()
                    if not self.url.startswith(f"http://{LOOPBACK}:"):
                        raise RuntimeError(f"{self.name} is not on loopback: {self.url}")
                    return
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{text[-3000:]}")
                await trio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not report its URL within {deadline_s}s; see {self.log_path}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def memory_kib(self) -> dict[str, int]:
        """VmRSS and, from smaps_rollup, the anonymous and private dirty KiB of the server process."""
        assert self.proc is not None
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1])
        try:
            for line in Path(f"/proc/{self.proc.pid}/smaps_rollup").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name in ("Anonymous", "Private_Dirty"):
                    out[name.lower()] = int(rest.split()[0])
        except FileNotFoundError:
            pass
        return out

    def cpu_s(self) -> float:
        assert self.proc is not None
        return process_cpu_s(self.proc.pid)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, deadline_s: float = 20.0) -> str:
        return stop_process(self.name, self.proc, deadline_s)


class Clients:
    """The client processes, driven by lines on their stdin; their stdout lines arrive on one channel."""

    def __init__(self) -> None:
        import trio

        self.procs: list[Any] = []
        self.send, self.lines = trio.open_memory_channel[tuple[int, str]](math.inf)

    async def start(self, nursery: Any, server: ServerProc, sessions: int, args: argparse.Namespace) -> None:
        import trio

        n = max(1, math.ceil(sessions / PER_CLIENT))
        per = math.ceil(sessions / n)
        for c in range(n):
            params = {
                "kind": "herald" if server.name == "herald" else "echo", "host": LOOPBACK, "port": server.port,
                "key": server.key, "prefix": args.prefix, "first": c * per, "count": min(per, sessions - c * per),
                "ack": not args.no_ack, "deflate": args.deflate,
            }  # fmt: skip
            argv = [sys.executable, str(HERE), "_client", json.dumps(params)]
            proc = await trio.lowlevel.open_process(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.procs.append(proc)
            nursery.start_soon(self._read, c, proc)

    async def _read(self, c: int, proc: Any) -> None:
        buffer = b""
        async for chunk in proc.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                await self.send.send((c, line.decode(errors="replace")))

    async def tell(self, command: str) -> None:
        for proc in self.procs:
            await proc.stdin.send_all(command.encode() + b"\n")

    async def each(self, prefix: str, deadline_s: float) -> list[str]:
        """The next line starting with `prefix` from every client (others are skipped), within the deadline."""
        import trio

        got: dict[int, str] = {}
        with trio.fail_after(deadline_s):
            while len(got) < len(self.procs):
                c, line = await self.lines.receive()
                if line.startswith(prefix):
                    got[c] = line
        return [got[c] for c in range(len(self.procs))]

    async def close(self) -> None:
        import trio

        for proc in self.procs:
            try:
                await proc.stdin.send_all(b"close\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        with trio.move_on_after(20):
            for proc in self.procs:
                await proc.wait()
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _server(name: str, workdir: Path, traced: list[str] | None, profile: str = "") -> ServerProc:
    py = [sys.executable]
    if name == "herald":
        herald_bin = BIN / "herald"
        args = ["serve", "--port", "0", "--data-dir", str(workdir / "herald-data")]
        if profile and not traced:
            argv = [*py, str(Path(__file__).resolve()), "_profiled", profile, *args]
            return ServerProc(name, argv, workdir / "herald.log", env={"HERALD_LOG_LEVEL": "WARNING"})
        argv = [*py, str(Path(__file__).resolve()), "_traced", *traced, "herald", *args] if traced else [str(herald_bin), *args]
        return ServerProc(name, argv, workdir / "herald.log", env={"HERALD_LOG_LEVEL": "WARNING"})
    script = {"bare": "bare_asgi.py", "trio-websocket": "bare_trio_ws.py"}[name]
    if traced:
        return ServerProc(name, [*py, str(Path(__file__).resolve()), "_traced", *traced, name, "--port", "0"], workdir / f"{name}.log")
    return ServerProc(name, [*py, str(ROOT / "loadtests" / script), "--port", "0"], workdir / f"{name}.log")


@dataclass
class Measured:
    server: str
    sessions: int = 0
    failed: int = 0
    before: dict[str, int] = field(default_factory=dict)
    half: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    open_s: float = 0.0
    open_cpu_s: float = 0.0
    delivery: dict[str, Any] = field(default_factory=dict)
    topic: dict[str, Any] = field(default_factory=dict)  # --broadcast topic: one topic notification to every user
    notes: list[str] = field(default_factory=list)

    def per_session(self, key: str = "rss") -> float:
        return (self.after.get(key, 0) - self.before.get(key, 0)) / max(1, self.sessions)

    def marginal(self, key: str = "rss") -> float:
        second = self.sessions - self._half_count
        return (self.after.get(key, 0) - self.half.get(key, 0)) / max(1, second)

    _half_count: int = 0


async def _measure(name: str, args: argparse.Namespace, workdir: Path) -> Measured:
    import trio

    out = Measured(name)
    server = _server(name, workdir, None, args.profile)
    clients = Clients()
    try:
        await server.start()
        async with trio.open_nursery() as nursery:
            await clients.start(nursery, server, args.sessions, args)
            tokens = await clients.each("TOKENS", 60 + args.sessions / 50)
            if name == "herald":
                out.notes.append(f"subscriber tokens minted: {sum(int(t.split()[1]) for t in tokens)}")
            await trio.sleep(args.settle)
            out.before = server.memory_kib()
            half = args.sessions // 2
            per = math.ceil(args.sessions / len(clients.procs))
            t0, cpu0 = time.monotonic(), server.cpu_s()
            await clients.tell(f"open {math.ceil(half / len(clients.procs))}")
            got = await clients.each("OPENED", 60 + args.sessions / 20)
            out._half_count = sum(int(g.split()[1]) for g in got)
            await trio.sleep(args.settle)
            out.half = server.memory_kib()
            t1, cpu1 = time.monotonic(), server.cpu_s()
            await clients.tell(f"open {per}")
            got2 = await clients.each("OPENED", 60 + args.sessions / 20)
            out.open_s = (t1 - t0) + (time.monotonic() - t1)
            out.open_cpu_s = (cpu1 - cpu0) + (server.cpu_s() - cpu1)
            out.sessions = out._half_count + sum(int(g.split()[1]) for g in got2)
            out.failed = sum(int(g.split()[2]) for g in got + got2)
            await trio.sleep(args.settle)
            out.after = server.memory_kib()
            if name == "herald" and not args.no_delivery:
                out.delivery = await _deliver(server, clients, out.sessions, args)
                await trio.sleep(args.settle)
                out.delivered = server.memory_kib()
            await clients.tell("report")
            reports = [json.loads(line[len(MARK) :]) for line in await clients.each(MARK, 60)]
            if out.delivery:
                _frames(out.delivery, reports)
            if name == "herald" and not args.no_delivery and args.broadcast == "topic":
                await clients.tell("reset")
                await clients.each("RESET", 60)
                out.topic = await _broadcast_topic(server, clients, out.sessions, args)
                await clients.tell("report")
                reports = [json.loads(line[len(MARK) :]) for line in await clients.each(MARK, 60)]
                _topic_frames(out.topic, reports, out.sessions)
            closed = sum(r["closed_early"] for r in reports)
            if closed:
                out.notes.append(f"sessions closed by the server early: {closed}: {[r['reasons'] for r in reports][:2]}")
            if out.failed:
                out.notes.append(f"sessions that failed to open: {out.failed}: {[r['reasons'] for r in reports][:2]}")
            t0 = time.monotonic()  # stopped with every session open: the drain closes them all
            stopped = await trio.to_thread.run_sync(server.stop, args.stop_deadline)
            out.notes.append(f"{stopped} in {time.monotonic() - t0:.1f}s with {out.sessions} sessions open")
            await clients.close()
            nursery.cancel_scope.cancel()
    finally:
        for proc in clients.procs:
            if proc.returncode is None:
                proc.kill()
        if server.proc is not None and server.proc.poll() is None:
            out.notes.append(server.stop())
    return out


async def _deliver(server: ServerProc, clients: Clients, sessions: int, args: argparse.Namespace) -> dict[str, Any]:
    """One notification per user from a poster process; wait until every client saw one per session (or the grace)."""
    import trio

    params = {"host": LOOPBACK, "port": server.port, "key": server.key, "prefix": args.prefix, "users": args.sessions,
              "connections": args.post_connections}  # fmt: skip
    argv = [sys.executable, str(HERE), "_poster", json.dumps(params)]
    cpu0 = server.cpu_s()
    with trio.fail_after(120 + args.sessions / 50):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"poster failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    posted = json.loads(next(line for line in done.stdout.decode().splitlines() if line.startswith(MARK))[len(MARK) :])
    with trio.move_on_after(args.grace):
        await clients.each("ALLFRAMES", args.grace)
    return {"posted": posted, "server_cpu_s": server.cpu_s() - cpu0}


async def _broadcast_topic(server: ServerProc, clients: Clients, sessions: int, args: argparse.Namespace) -> dict[str, Any]:
    """Subscribe every user to one topic (PUT, batches of 1,000), send one web notification to it; wait for the frames."""
    import trio

    topic = f"{args.prefix}-all"
    http = RawHttp(LOOPBACK, server.port, server.key)
    try:
        t0 = time.monotonic()
        for start in range(0, args.sessions, 1000):
            ids = [f"{args.prefix}-{i}" for i in range(start, min(start + 1000, args.sessions))]
            status, body = await http.request("PUT", f"/v1/topics/{topic}/subscribers", json.dumps({"user_ids": ids}).encode())
            if status not in (200, 204):
                raise RuntimeError(f"PUT subscribers: {status} {body[:200]!r}")
        subscribe_s = time.monotonic() - t0
        await trio.sleep(args.settle)
        cpu0 = server.cpu_s()
        body = json.dumps({"topic": topic, "channels": ["web"], "content": {"web": {"title": "all", "body": "b"}}})
        if args.profile:
            server.signal(signal.SIGUSR1)  # the server's cProfile: from the topic send to its last frame
        sent = time.monotonic()
        status, answer = await http.request("POST", "/v1/notifications", body.encode())
        accepted = time.monotonic()
    finally:
        await http.aclose()
    if status != 202:
        raise RuntimeError(f"topic send: {status} {answer[:300]!r}")
    with trio.move_on_after(args.grace):
        await clients.each("ALLFRAMES", args.grace)
    cpu_s = server.cpu_s() - cpu0
    if args.profile:
        server.signal(signal.SIGUSR2)
    return {"subscribe_s": subscribe_s, "sent": sent, "accepted": accepted, "server_cpu_s": cpu_s,
            "id": json.loads(answer)["notification_id"]}  # fmt: skip


def _topic_frames(topic: dict[str, Any], reports: list[dict[str, Any]], sessions: int) -> None:
    """The topic broadcast's figures: 202 -> first and last frame, frames missing, duplicates, into `topic`."""
    arrivals = sorted(t for r in reports for t in r["received"].values())
    accepted = topic["accepted"]
    topic.update({
        "frames": len(arrivals), "missing": sessions - len(arrivals), "duplicates": sum(r["duplicates"] for r in reports),
        "post_ms": (accepted - topic["sent"]) * 1e3,
        "first_frame_s": (arrivals[0] - accepted) if arrivals else float("nan"),
        "p50_frame_s": (arrivals[len(arrivals) // 2] - accepted) if arrivals else float("nan"),
        "last_frame_s": (arrivals[-1] - accepted) if arrivals else float("nan"),
    })  # fmt: skip


def _frames(delivery: dict[str, Any], reports: list[dict[str, Any]]) -> None:
    """Join the poster's answers with the clients' arrivals: the delivery figures, into `delivery`."""
    results = delivery["posted"]["results"]
    received: dict[str, float] = {}
    for r in reports:
        received.update(r["received"])
    accepted = {i: v for i, v in results.items() if v[2] == 202}
    first_202 = min((v[1] for v in accepted.values()), default=0.0)
    last_202 = max((v[1] for v in accepted.values()), default=0.0)
    first_sent = min((v[0] for v in results.values()), default=0.0)
    arrivals = [received[i] for i in accepted if i in received]
    latencies = sorted((received[i] - v[0]) * 1e3 for i, v in accepted.items() if i in received)
    statuses: dict[int, int] = {}
    for v in results.values():
        statuses[int(v[2])] = statuses.get(int(v[2]), 0) + 1
    delivery.update({
        "accepted": len(accepted), "statuses": statuses, "post_failures": delivery["posted"]["failed"],
        "frames": len(arrivals), "missing": len(accepted) - len(arrivals),
        "post_window_s": last_202 - first_sent,
        "first_202_to_last_frame_s": (max(arrivals) - first_202) if arrivals else float("nan"),
        "last_202_to_last_frame_s": (max(arrivals) - last_202) if arrivals else float("nan"),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1] if latencies else 0.0,
        "duplicates": sum(r["duplicates"] for r in reports),
    })  # fmt: skip
    del delivery["posted"]


def _report(measured: list[Measured], args: argparse.Namespace, elapsed: float) -> str:
    out = ["", "=" * 78, f"SUMMARY: {args.sessions} idle WebSocket sessions per server (loopback; 2 cores shared)", "=" * 78]
    by = {m.server: m for m in measured}
    for m in measured:
        out.append(
            f"{m.server:<15} {m.sessions} open ({m.failed} failed) in {m.open_s:.1f}s, server CPU {m.open_cpu_s:.1f}s "
            f"({1e3 * m.open_cpu_s / max(1, m.sessions):.2f} ms/session)"
        )
        out.append(
            f"{'':<15} RSS {m.before['rss'] / 1024:.0f} -> {m.half['rss'] / 1024:.0f} -> {m.after['rss'] / 1024:.0f} MiB: "
            f"{m.per_session():.1f} KiB/session (marginal over the second half {m.marginal():.1f}); "
            f"anonymous {m.per_session('anonymous'):.1f} KiB/session"
        )
        for note in m.notes:
            out.append(f"{'':<15} {note}")
    herald = by.get("herald")
    if herald is not None:
        for ref in ("bare", "trio-websocket"):
            if ref in by and by[ref].per_session() > 0:
                out.append(f"RATIO herald/{ref}: {herald.per_session() / by[ref].per_session():.2f}x KiB per session "
                           f"(goal: herald < {args.goal_kib:g} KiB/session: {'MET' if herald.per_session() < args.goal_kib else 'NOT MET'})")  # fmt: skip
        d = herald.delivery
        if d:
            out.append(
                f"DELIVERY (one POST per user, {args.post_connections} connections; the reference): "
                f"first 202 -> last frame {d['first_202_to_last_frame_s']:.2f}s; POST window {d['post_window_s']:.2f}s "
                f"({d['accepted'] / max(1e-9, d['post_window_s']):.0f} accepted/s); last 202 -> last frame "
                f"{d['last_202_to_last_frame_s']:.2f}s; POST->frame p50 {d['p50_ms']:.0f} ms p99 {d['p99_ms']:.0f} ms "
                f"max {d['max_ms']:.0f} ms; frames {d['frames']}/{d['accepted']} (MISSING {d['missing']}, duplicates "
                f"{d['duplicates']}); statuses {d['statuses']}; server CPU {d['server_cpu_s']:.1f}s "
                f"({1e3 * d['server_cpu_s'] / max(1, d['accepted']):.2f} ms/notification)"
            )
            t = herald.topic
            if t:
                goal = "MET" if t["missing"] == 0 and t["last_frame_s"] <= args.goal_broadcast_s else "NOT MET"
                out.append(
                    f"BROADCAST (one topic notification, web, to {herald.sessions} subscribers; PUT of them {t['subscribe_s']:.1f}s): "
                    f"POST {t['post_ms']:.0f} ms; 202 -> first frame {t['first_frame_s']:.2f}s, p50 {t['p50_frame_s']:.2f}s, "
                    f"last frame {t['last_frame_s']:.2f}s (goal <= {args.goal_broadcast_s:g}s: {goal}); frames {t['frames']} "
                    f"(MISSING {t['missing']}, duplicates {t['duplicates']}); server CPU {t['server_cpu_s']:.1f}s "
                    f"({1e3 * t['server_cpu_s'] / max(1, t['frames']):.3f} ms/subscriber)"
                )
                out.append(
                    f"RATIO topic/per-user: 202->last frame {t['last_frame_s']:.2f}s vs first 202->last frame "
                    f"{d['first_202_to_last_frame_s']:.2f}s; CPU per recipient {t['server_cpu_s'] / max(1, t['frames']) * 1e3:.3f} vs "
                    f"{d['server_cpu_s'] / max(1, d['accepted']) * 1e3:.3f} ms"
                )
            if herald.delivered:
                grown = (herald.delivered["rss"] - herald.before["rss"]) / max(1, herald.sessions)
                out.append(f"{'':<15} RSS after the delivery {herald.delivered['rss'] / 1024:.0f} MiB: {grown:.1f} KiB/session")
    out.append(f"total wall time {elapsed:.0f}s")
    out.append("=" * 78)
    return "\n".join(out)


# -- tracemalloc: where the memory of N sessions goes -------------------------------------------


def _owner(filename: str) -> str:
    """The library a file belongs to (site-packages' top folder, Herald's top package, or `python`)."""
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1].split("/", 1)[0]
    root = str(ROOT).replace("\\", "/") + "/"
    if path.startswith(root):
        return "herald:" + path[len(root) :].split("/", 1)[0]
    return "python"


def _attribution(trace_frames: Any) -> str:
    """Who made the allocation: the innermost frame outside the stdlib and trio, as `owner file:line`."""
    for frame in reversed(trace_frames):  # tracemalloc keeps them oldest first
        owner = _owner(frame.filename)
        if owner not in ("python", "trio"):
            return f"{owner} {_short(frame.filename)}:{frame.lineno}"
    frame = trace_frames[-1]
    return f"{_owner(frame.filename)} {_short(frame.filename)}:{frame.lineno}"


def _short(filename: str) -> str:
    path = filename.replace("\\", "/")
    for cut in ("/site-packages/", str(ROOT) + "/", "/lib/python3"):
        if cut in path:
            return path.split(cut, 1)[1]
    return path


def _traced_report(name: str, before_path: str, after_path: str, sessions: int, top: int) -> str:
    import tracemalloc

    before = tracemalloc.Snapshot.load(before_path)
    after = tracemalloc.Snapshot.load(after_path)
    lines = [f"--- {name}: tracemalloc, {sessions} sessions opened between the snapshots"]
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    lines.append(f"traced Python allocations grew {total / 1024:.0f} KiB: {total / 1024 / max(1, sessions):.1f} KiB/session")
    by_owner: dict[str, int] = {}
    by_site: dict[str, list[int]] = {}
    for stat in after.compare_to(before, "traceback"):
        if stat.size_diff == 0:
            continue
        site = _attribution(stat.traceback)
        owner = site.split(" ", 1)[0]
        by_owner[owner] = by_owner.get(owner, 0) + stat.size_diff
        entry = by_site.setdefault(site, [0, 0])
        entry[0] += stat.size_diff
        entry[1] += stat.count_diff
    lines.append("by library (the innermost frame outside the stdlib and trio), bytes per session:")
    for owner, size in sorted(by_owner.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {size / sessions:9.0f}  {owner}")
    lines.append(f"top {top} allocation sites, bytes and blocks per session:")
    for site, (size, count) in sorted(by_site.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"  {size / sessions:9.0f} {count / sessions:6.1f}  {site}")
    lines.append("by line where the memory was allocated (innermost frame), bytes per session:")
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[-1]
        lines.append(f"  {stat.size_diff / sessions:9.0f} {stat.count_diff / sessions:6.1f}  {_short(frame.filename)}:{frame.lineno}")
    return "\n".join(lines)


async def _trace(name: str, args: argparse.Namespace, workdir: Path) -> str:
    import trio

    prefix = str(workdir / f"{name}.snapshot")
    server = _server(name, workdir, [prefix, str(args.trace_frames)])
    clients = Clients()
    n = args.tracemalloc
    try:
        await server.start(deadline_s=120)
        async with trio.open_nursery() as nursery:
            await clients.start(nursery, server, n + args.trace_warmup, args)
            await clients.each("TOKENS", 120 + n / 20)
            # warm-up sessions first (code paths run the first time, caches), then the measured ones
            await clients.tell(f"open {math.ceil(args.trace_warmup / len(clients.procs))}")
            await clients.each("OPENED", 60 + n / 10)
            await trio.sleep(args.settle)
            server.signal(signal.SIGUSR1)
            await _wait_for_file(f"{prefix}.1")
            await clients.tell(f"open {math.ceil(n / len(clients.procs))}")
            got = await clients.each("OPENED", 60 + n / 10)
            opened = sum(int(g.split()[1]) for g in got)
            await trio.sleep(args.settle)
            server.signal(signal.SIGUSR1)
            await _wait_for_file(f"{prefix}.2")
            await clients.close()
            nursery.cancel_scope.cancel()
    finally:
        for proc in clients.procs:
            if proc.returncode is None:
                proc.kill()
        server.stop()
    return _traced_report(name, f"{prefix}.1", f"{prefix}.2", opened, args.top)


async def _wait_for_file(path: str, deadline_s: float = 120) -> None:
    import trio

    with trio.fail_after(deadline_s):
        file = trio.Path(path)
        while not await file.exists():
            await trio.sleep(0.2)
        size = -1
        while (now := (await file.stat()).st_size) != size:  # written whole
            size = now
            await trio.sleep(0.5)


def driver(args: argparse.Namespace) -> int:
    import trio

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.sessions + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < need:
        print(f"bench_sessions: RLIMIT_NOFILE is {soft} (hard {hard}): {args.sessions} sessions need about {need}", file=sys.stderr)
        return 2
    started = time.monotonic()
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="herald-bench-sessions-") as tmp:
        workdir = Path(tmp)
        if args.tracemalloc:
            for name in names:
                print(trio.run(_trace, name, args, workdir), flush=True)
            return 0
        measured = []
        for name in names:
            print(f"bench_sessions: {name}: {args.sessions} sessions ...", flush=True)
            m = trio.run(_measure, name, args, workdir)
            print(f"bench_sessions: {name}: {m.per_session():.1f} KiB/session", flush=True)
            measured.append(m)
        print(_report(measured, args, time.monotonic() - started), flush=True)
        herald = next((m for m in measured if m.server == "herald"), None)
        bad = any(m.failed for m in measured) or (herald is not None and (herald.delivery.get("missing", 0) > 0 or herald.topic.get("missing", 0) > 0))
        return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_client"]:
        _client_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["_poster"]:
        _poster_main(json.loads(argv[1]))
        return 0
    if argv[:1] == ["_traced"]:
        _traced_main(argv[1:])
        return 0
    if argv[:1] == ["_profiled"]:
        _profiled_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(
        description="Idle WebSocket sessions: KiB per session on Herald vs bare servers; delivery to every session.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Everything runs on 127.0.0.1 and stops by itself. Exit status 0 if every session opened and no frame was missing.",
    )
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions per server, one user each (default 10000)")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"which servers, in order (default {','.join(SERVERS)})")
    parser.add_argument("--settle", type=float, default=3, help="seconds to wait before each RSS reading (default 3)")
    parser.add_argument("--post-connections", type=int, default=32, help="the poster's connections (default 32)")
    parser.add_argument("--grace", type=float, default=30, help="seconds to wait for frames after the last POST (default 30)")
    parser.add_argument("--no-delivery", action="store_true", help="skip the delivery step")
    parser.add_argument("--broadcast", choices=("posts", "topic"), default="posts",
                        help="topic: after the per-user POSTs (the reference), subscribe every user to a topic and send it one notification")
    parser.add_argument("--goal-broadcast-s", type=float, default=1.0, help="202 -> last frame of the topic broadcast to meet (1 s)")
    parser.add_argument("--profile", default="", metavar="OUT",
                        help="with --broadcast topic: a cProfile of Herald's event loop from the topic send to its last frame, to OUT")
    parser.add_argument("--no-ack", action="store_true", help="do not ack notification frames")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--stop-deadline", type=float, default=60, help="seconds a server has to stop on SIGTERM (default 60)")
    parser.add_argument("--goal-kib", type=float, default=30, help="KiB per idle Herald session to meet (default 30)")
    parser.add_argument("--prefix", default=f"sess{os.getpid()}", help="user id prefix")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="N", help="trace N sessions instead (see above)")
    parser.add_argument("--trace-warmup", type=int, default=200, help="sessions opened before the first snapshot (200)")
    parser.add_argument("--trace-frames", type=int, default=25, help="frames kept per traced allocation (25)")
    parser.add_argument("--top", type=int, default=25, help="rows of each tracemalloc table (25)")
    args = parser.parse_args(argv)
    if not 2 <= args.sessions <= 10_000:
        parser.error("--sessions: 2..10000")
    if not 0 <= args.tracemalloc <= 5_000:
        parser.error("--tracemalloc: 0..5000")
    if not 1 <= args.post_connections <= 256:
        parser.error("--post-connections: 1..256")
    if any(n.strip() not in SERVERS for n in args.servers.split(",") if n.strip()):
        parser.error(f"--servers: among {', '.join(SERVERS)}")
    if not (0 <= args.settle <= 60 and 0 < args.grace <= 300):
        parser.error("--settle/--grace out of range")
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
