"""One command for a load run: a node, a bounded headless locust scenario, the report and a summary.

Runs with Herald's venv (`make load` does: `.venv/bin/python loadtests/run_load.py $(LOAD_ARGS)`);
locust runs in its own venv, .venv-load (scripts/install-load-deps.sh, built here on first
use), as a subprocess, so gevent never touches this process or the node's.

    .venv/bin/python loadtests/run_load.py                              # embedded node, the default mix, 20 s
    .venv/bin/python loadtests/run_load.py --classes Sender,Subscriber --users 40 --duration 30 --processes 2
    .venv/bin/python loadtests/run_load.py --shape flash --multiple 4 --phases ramp=3,base=4,spike=1,hold=6,fall=2,tail=4
    .venv/bin/python loadtests/run_load.py --workers 2                  # a master and 2 worker processes on loopback
    .venv/bin/python loadtests/run_load.py --host http://api:8080 --edge-host http://edge:8080 --api-key-file key

Without --host it starts `herald serve --port 0` (the embedded defaults, a fresh data dir
under --out) and stops it at the end. Then locust runs headless for --duration seconds
(--processes N: one master and N worker processes; --workers N: the same as separate
commands, as across machines), writing into --out: locust's CSV (`locust_stats.csv`,
`locust_stats_history.csv` second by second, `locust_failures.csv`), its HTML report
(`report.html`), `locust.log`, and this script's `summary.txt` and `summary.json`:
requests/s, the failure rate, p50/p95/p99 per request type (`deliver:web` included), and
Herald's own counters: what became of every notification the run got accepted (each locust
process lists the ids in --out/ids/; GET /v1/notifications/{id} of each, waiting up to
--drain-s for them to settle): deliveries per channel and lost = accepted - delivered;
plus the node's /metrics deltas when the node answers /metrics (the summary says which
source each figure comes from). With an embedded node, the CPU seconds of the node and of
locust per request (loadtests/README.md: the 57k plan).

Exit status 0 when no request failed and nothing was lost.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import queue
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
LOAD_VENV = ROOT / ".venv-load"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
CLASSES = ("Sender", "BatchSender", "TopicSender", "Subscriber", "SseSubscriber", "Reader")
DEFAULT_CLASSES = "Sender,BatchSender,Subscriber,SseSubscriber,Reader"
DELIVERED = {"delivered", "opened", "read"}  # final and delivered, any channel
WEB_DELIVERED = DELIVERED | {"sent"}  # web: `sent` is final, stored in the inbox (README, Statuses)
FAILED = {"failed", "dead_lettered"}
TOPICS_MISSING_MARK = "TopicSender: skipped:"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def locust_binary(install: bool) -> Path:
    """.venv-load/bin/locust, built from requirements/load.txt when missing (and allowed)."""
    binary = LOAD_VENV / "bin" / "locust"
    if not binary.exists():
        if not install:
            raise SystemExit(f"run_load: {binary} is missing: run scripts/install-load-deps.sh (or make load)")
        print("run_load: building .venv-load from requirements/load.txt (once)", flush=True)
        subprocess.run([str(ROOT / "scripts" / "install-load-deps.sh")], check=True, cwd=ROOT)
    return binary


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Node:
    url: str
    edge_url: str
    api_key: str
    pid: int | None = None  # an embedded node's process
    how: str = ""


@contextmanager
def embedded_node(data_dir: Path) -> Iterator[Node]:
    """`herald serve --port 0` with the embedded defaults; SIGTERM (SIGKILL after 20 s) at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(PYTHONPATH=str(ROOT), HERALD_LOG_LEVEL="WARNING")
    log = open(data_dir.parent / "herald.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "actors.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: queue.Queue[bytes] = queue.Queue()

    def copy_output() -> None:  # into the log, and the lines to the start-up check (a full pipe would block the node)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            lines.put(line)
        lines.put(b"")

    copier = threading.Thread(target=copy_output, daemon=True)
    copier.start()
    try:
        url = key_file = ""
        deadline = time.monotonic() + 60
        while not key_file and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if not line:
                break
            text = line.decode(errors="replace")
            if m := re.match(r"herald: serving on (\S+)", text):
                url = m.group(1)
            if m := re.match(r"herald: API key in (\S+)", text):
                key_file = m.group(1)
        if not (url and key_file):
            raise SystemExit(f"run_load: herald serve did not start within 60 s; its output is in {log.name}")
        yield Node(url, url, Path(key_file).read_text().strip(), process.pid,
                   f"embedded: herald serve --port 0 --data-dir {data_dir} (pid {process.pid})")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        copier.join(5)
        log.close()


def locust_commands(args: argparse.Namespace, binary: Path, node: Node, out: Path) -> list[list[str]]:
    """The locust command lines: one (local, --processes), or a master then --workers workers."""
    common = ["-f", str(LOCUSTFILE), "--herald-ids-dir", str(out / "ids"), "--herald-edge-host", node.edge_url,
              "--herald-shape", args.shape, "--herald-multiple", str(args.multiple)]
    if args.phases:
        common += ["--herald-phases", args.phases]
    if args.weights:
        common += ["--herald-weights", args.weights]
    run = ["--headless", "--host", node.url, "-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.duration}s",
           "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "report.html"), "--only-summary",
           "--stop-timeout", "10", *args.locust_arg, *args.classes.split(",")]
    if args.workers:
        port = free_port()
        master = [str(binary), *common, *run, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                  "--expect-workers", str(args.workers), "--expect-workers-max-wait", "60"]
        worker = [str(binary), "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        return [master] + [worker] * args.workers
    return [[str(binary), *common, *run, *(["--processes", str(args.processes)] if args.processes > 1 else [])]]


def run_locust(commands: list[list[str]], env: dict[str, str], log_path: Path, limit_s: float) -> tuple[int, float]:
    """Run the master (or local) command and its workers; (exit status, CPU seconds of locust's processes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log_path, "wb") as log:
        processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) for command in commands]
        try:
            status = processes[0].wait(limit_s)
            for worker in processes[1:]:
                worker.wait(30)
        except subprocess.TimeoutExpired:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            raise SystemExit(f"run_load: locust did not finish within {limit_s:.0f} s; see {log_path}") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return status, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# ----------------------------------------------------------------------------- Herald's counters


def read_sent(ids_dir: Path) -> list[tuple[str, str, list[str]]]:
    """(id, kind, channels) of every notification the locust processes got accepted."""
    sent = []
    for path in sorted(ids_dir.glob("sent-*.tsv")):
        for line in path.read_text().splitlines():
            nid, kind, channels = line.split("\t")[:3]
            sent.append((nid, kind, [c for c in channels.split(",") if c]))
    return sent


def read_topic_members(ids_dir: Path) -> dict[str, list[str]]:
    """Each topic send's subscribers, as TopicSender wrote them (`user-:100` -> user-0 .. user-99)."""
    members: dict[str, list[str]] = {}
    for path in sorted(ids_dir.glob("sent-*.tsv")):
        for line in path.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) == 4 and fields[1] == "topic":
                prefix, _, count = fields[3].rpartition(":")
                members[fields[0]] = [f"{prefix}{i}" for i in range(int(count))]
    return members


def member_id_function() -> Any:
    """protocol.topics.member_notification_id (a subscriber's copy of a topic send), when this tree has topics."""
    try:
        from protocol.topics import member_notification_id
    except ImportError:
        return None
    return member_notification_id


@dataclass
class Outcome:
    sent_by_kind: Counter[str] = field(default_factory=Counter)
    checked: int = 0  # notifications asked about (all, or a sample)
    per_channel: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    topic_sends: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lost(self) -> int:
        return sum(c["accepted"] - c["delivered"] for c in self.per_channel.values())


def check_sent(node: Node, sent: list[tuple[str, str, list[str]]], drain_s: float, check_max: int, concurrency: int,
               members: dict[str, list[str]] | None = None) -> Outcome:
    """GET /v1/notifications/{id} of what was sent (or a sample of --check-max) until each settles or drain_s runs out.

    A topic send is asked until its fan-out is done; then each subscriber's copy (its id derived
    as the node derives it, when this tree has protocol.topics) is asked like any notification.
    """
    import httpx
    import trio

    outcome = Outcome(sent_by_kind=Counter(kind for _, kind, _ in sent))
    rows = [row for row in sent if row[1] != "topic"]
    topics = [row for row in sent if row[1] == "topic"]
    if check_max <= 0:  # not asked: a reference server, or a run that only measures the load generator
        rows, topics = [], []
    elif len(rows) > check_max:
        rows = random.Random(0).sample(rows, check_max)
    outcome.checked = len(rows)
    headers = {"Authorization": f"Bearer {node.api_key}"}
    state: dict[str, dict[str, Any] | None] = {}  # id -> last status body (None: 404)

    async def ask(client: httpx.AsyncClient, nid: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            try:
                response = await client.get(f"/v1/notifications/{nid}", headers=headers)
            except httpx.HTTPError as error:
                outcome.errors.append(f"{nid}: {error!r}")
                return
        if response.status_code == 404:
            state[nid] = None
        elif response.status_code == 200:
            state[nid] = response.json()
        else:
            outcome.errors.append(f"{nid}: {response.status_code} {response.text[:200]}")

    async def settle(client: httpx.AsyncClient, todo: list[str], deadline: float) -> None:
        limiter = trio.CapacityLimiter(concurrency)
        while todo:
            async with trio.open_nursery() as nursery:
                for nid in todo:
                    nursery.start_soon(ask, client, nid, limiter)
            todo = [nid for nid in todo if not (state.get(nid) or {}).get("final")]
            if not todo or trio.current_time() >= deadline:
                break
            await trio.sleep(1.0)

    member_id = member_id_function()
    copies: list[tuple[str, str, list[str]]] = []

    async def main() -> None:
        deadline = trio.current_time() + drain_s
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
            await settle(client, [nid for nid, _, _ in rows] + [nid for nid, _, _ in topics], deadline)
            if member_id is None or not members:
                return
            for nid, _, _ in topics:
                if (state.get(nid) or {}).get("final"):  # fanned out: each subscriber's copy exists
                    copies.extend((member_id(nid, user), "topic member", ["web"]) for user in members.get(nid, []))
            if len(copies) > max(check_max - len(rows), 0):
                copies[:] = random.Random(1).sample(copies, max(check_max - len(rows), 0))
            await settle(client, [nid for nid, _, _ in copies], max(deadline, trio.current_time() + 10))

    trio.run(main)
    if copies:
        outcome.sent_by_kind["topic member"] = sum(len(members.get(nid, [])) for nid, _, _ in topics if (state.get(nid) or {}).get("final"))
        rows = rows + copies
        outcome.checked = len(rows)
    elif topics and member_id is None:
        outcome.notes.append("topic members not asked: this tree has no protocol.topics (member_notification_id)")
    for nid, _, channels in rows:
        body = state.get(nid)
        for channel in channels:
            counts = outcome.per_channel[channel]
            counts["accepted"] += 1
            status = ((body or {}).get("channels") or {}).get(channel) if body else None
            if body is None:
                counts["missing (404)"] += 1
            elif status is None:
                counts["no such channel in the status"] += 1
            elif status.get("status") in (WEB_DELIVERED if channel == "web" else DELIVERED):
                counts["delivered"] += 1
            elif status.get("status") in FAILED:
                counts["failed"] += 1
            else:
                counts["unsettled"] += 1
    for nid, _, _ in topics:
        body = state.get(nid) or {}
        outcome.topic_sends["sent"] += 1
        outcome.topic_sends["fan-out done"] += bool(body.get("final"))
        outcome.topic_sends["subscribers expanded"] += int(body.get("expanded") or 0)
    return outcome


# ----------------------------------------------------------------------------- /metrics

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def scrape(urls: list[str], api_key: str) -> dict[str, float] | None:
    """The herald_* samples ({"name{labels}": value}) summed over these /metrics URLs, or None if one does not answer them.

    `GET /metrics` needs an API key with the admin scope (the bootstrap key has it); a node's
    separate `metrics_port` needs none (the header is then ignored).
    """
    import httpx

    total: dict[str, float] = {}
    for url in urls:
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        except httpx.HTTPError:
            return None
        if response.status_code != 200 or "herald_" not in response.text:
            return None
        for key, value in parse_metrics(response.text).items():
            total[key] = total.get(key, 0.0) + value
    return total


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value} of the herald_* samples."""
    samples = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1).startswith("herald_"):
            try:
                samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return samples


def labels_of(key: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', key.partition("{")[2]))


def metrics_summary(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    if before is None or after is None:
        return {"source": "none: the node does not answer /metrics with herald_* families (with this key): "
                          "Herald's counters above come from the API alone"}
    deltas = {k: v - before.get(k, 0.0) for k, v in after.items() if k.split("{")[0].endswith("_total")}
    deliveries: dict[str, dict[str, float]] = defaultdict(dict)
    for key, value in deltas.items():
        if key.startswith("herald_deliveries_total") and value:
            lab = labels_of(key)
            deliveries[lab.get("channel", "?")][lab.get("outcome", "?")] = value
    lag = sum(v for k, v in after.items() if k.startswith("herald_bus_consumer_lag"))
    return {
        "source": "/metrics (Prometheus text), deltas over the run and the drain",
        "deliveries_per_channel": {c: dict(sorted(o.items())) for c, o in sorted(deliveries.items())},
        "bus_lag_records_at_end": lag,
        "counter_deltas": {k: v for k, v in sorted(deltas.items()) if v},
    }


# ----------------------------------------------------------------------------- summary


def read_stats(out: Path) -> list[dict[str, str]]:
    path = out / "locust_stats.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def fmt(value: str) -> str:
    try:
        return f"{float(value):.0f}"
    except ValueError:
        return value


def summarize(args: argparse.Namespace, node: Node, out: Path, stats: list[dict[str, str]], outcome: Outcome,
              metrics: dict[str, Any], locust_cpu_s: float, node_cpu_s: float | None, locust_status: int,
              topics_missing: bool) -> tuple[str, dict[str, Any]]:
    total = next((row for row in stats if row["Name"] == "Aggregated"), None)
    rows = [row for row in stats if row["Name"] != "Aggregated"]
    requests_n = int(total["Request Count"]) if total else 0
    failures_n = int(total["Failure Count"]) if total else 0
    rps = float(total["Requests/s"]) if total else 0.0
    http_requests = sum(int(r["Request Count"]) for r in rows if not r["Type"].startswith(("deliver:", "WS", "SSE")))
    mode = f"distributed: a master and {args.workers} worker processes on loopback" if args.workers else (
        f"--processes {args.processes}" if args.processes > 1 else "one process")
    lines = [
        f"Herald load run, {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"node: {node.how or node.url}",
        f"locust: {args.classes} | -u {args.users} -r {args.spawn_rate} -t {args.duration}s | shape {args.shape}"
        + (f" x{args.multiple:g} {args.phases}" if args.shape == "flash" else "") + f" | {mode} | exit {locust_status}",
        f"report: {out / 'report.html'}; CSV: {out / 'locust_stats.csv'}, per second: {out / 'locust_stats_history.csv'}",
        "",
        f"requests/s {rps:.1f}   requests {requests_n}   failures {failures_n} ({100 * failures_n / max(requests_n, 1):.2f} %)",
        "",
        f"{'type':<12} {'name':<40} {'reqs':>8} {'fails':>6} {'req/s':>8} {'p50':>6} {'p95':>6} {'p99':>6}  (ms)",
    ]
    for row in rows:
        lines.append(f"{row['Type']:<12} {row['Name'][:40]:<40} {row['Request Count']:>8} {row['Failure Count']:>6} "
                     f"{float(row['Requests/s']):>8.1f} {fmt(row['50%']):>6} {fmt(row['95%']):>6} {fmt(row['99%']):>6}")
    if topics_missing:
        lines += ["", "TopicSender: skipped: the node answers 404 for the topics route (needs the topics feature)"]
    if args.check_max <= 0:
        lines += ["", "Herald's counters: not asked (--check-max 0)"]
    else:
        every = outcome.checked == sum(n for k, n in outcome.sent_by_kind.items() if k != "topic")
        lines += ["", "Herald's counters, from the API (GET /v1/notifications/{id} of "
                  + (f"every one of the {outcome.checked} ids sent" if every else f"a sample of {outcome.checked}")
                  + f", each waited for up to {args.drain_s:g} s to settle):",
                  "  accepted notifications: " + ", ".join(f"{k} {n}" for k, n in sorted(outcome.sent_by_kind.items())),
                  f"  {'channel':<8} {'accepted':>9} {'delivered':>10} {'failed':>7} {'unsettled':>10} {'missing':>8}"]
        for channel, counts in sorted(outcome.per_channel.items()):
            lines.append(f"  {channel:<8} {counts['accepted']:>9} {counts['delivered']:>10} {counts['failed']:>7} "
                         f"{counts['unsettled']:>10} {counts['missing (404)'] + counts['no such channel in the status']:>8}")
        lines.append(f"  lost = accepted - delivered: {outcome.lost()}" + ("" if every else " (in the sample)"))
        if outcome.topic_sends:
            lines.append("  topic sends: " + ", ".join(f"{k} {n}" for k, n in outcome.topic_sends.items())
                         + " (each subscriber's copy is asked after as `topic member` when this tree has protocol.topics)")
        if outcome.errors:
            lines.append(f"  errors asking: {len(outcome.errors)}, first: {outcome.errors[0]}")
        lines.extend(f"  note: {note}" for note in outcome.notes)
    lines += ["", f"/metrics: {metrics['source']}"]
    if "deliveries_per_channel" in metrics:
        for channel, outcomes in metrics["deliveries_per_channel"].items():
            lines.append(f"  herald_deliveries_total {channel}: " + ", ".join(f"{o} {v:.0f}" for o, v in outcomes.items()))
        lines.append(f"  bus lag at the end: {metrics['bus_lag_records_at_end']:.0f} records")
    test_cpu = sum(float(p.read_text()) for p in (out / "ids").glob("cpu-*.txt"))
    processes = len(list((out / "ids").glob("cpu-*.txt")))
    lines += ["", f"CPU: locust {test_cpu:.1f} s over the test in {processes} process(es) = "
              f"{http_requests / test_cpu if test_cpu else 0:.0f} HTTP requests per locust CPU second "
              f"({locust_cpu_s:.1f} s with start-up and report)"]
    if node_cpu_s:
        lines.append(f"     node {node_cpu_s:.1f} s over the run = {http_requests / node_cpu_s:.0f} HTTP requests per node CPU second"
                     " (the whole node: API and delivery)")
        accepted = sum(outcome.sent_by_kind.values())
        lines.append(f"     {accepted} notifications accepted = {accepted / node_cpu_s:.0f} per node CPU second")
    data = {
        "requests": requests_n, "failures": failures_n, "requests_per_s": rps,
        "per_type": [{"type": r["Type"], "name": r["Name"], "requests": int(r["Request Count"]), "failures": int(r["Failure Count"]),
                      "requests_per_s": float(r["Requests/s"]), "p50_ms": r["50%"], "p95_ms": r["95%"], "p99_ms": r["99%"]} for r in rows],
        "accepted": dict(outcome.sent_by_kind), "checked": outcome.checked,
        "per_channel": {c: dict(v) for c, v in outcome.per_channel.items()}, "lost": outcome.lost(),
        "topic_sends": dict(outcome.topic_sends), "topics_missing": topics_missing, "metrics": metrics,
        "locust_cpu_s": locust_cpu_s, "locust_test_cpu_s": test_cpu, "node_cpu_s": node_cpu_s, "http_requests": http_requests, "locust_exit": locust_status,
    }
    return "\n".join(lines), data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    node = parser.add_argument_group("the node (default: an embedded `herald serve` on a free loopback port)")
    node.add_argument("--host", help="a running node's or cluster's API base URL (then --api-key or --api-key-file)")
    node.add_argument("--edge-host", help="base URL for WebSocket and SSE sessions when not --host")
    node.add_argument("--api-key", default=os.environ.get("HERALD_API_KEY", ""))
    node.add_argument("--api-key-file", type=Path)
    node.add_argument("--metrics-url", action="append", default=[],
                      help="a /metrics URL to scrape (repeatable: every node of a cluster, e.g. workers' metrics_port); "
                           "default: the node's own, with the API key (admin scope)")
    run = parser.add_argument_group("the scenario")
    run.add_argument("--classes", default=DEFAULT_CLASSES, help=f"user classes, comma-separated, of {', '.join(CLASSES)}")
    run.add_argument("--weights", default="", help="e.g. Sender=6,Subscriber=2 (locustfile.py's defaults otherwise)")
    run.add_argument("--users", type=int, default=20, help="-u: users (the base of the ramp and flash shapes)")
    run.add_argument("--spawn-rate", type=float, default=10)
    run.add_argument("--duration", type=int, default=20, help="seconds of load (the run stops by itself)")
    run.add_argument("--shape", choices=("steady", "ramp", "flash"), default="steady")
    run.add_argument("--multiple", type=float, default=5.0, help="flash: peak users = users x this")
    run.add_argument("--phases", default="", help="flash: e.g. ramp=3,base=4,spike=1,hold=6,fall=2,tail=4 (seconds)")
    run.add_argument("--processes", type=int, default=1, help="locust worker processes on this machine (--processes)")
    run.add_argument("--workers", type=int, default=0, help="instead: a master and N separate worker commands on loopback")
    run.add_argument("--locust-arg", action="append", default=[], help="one more argument for locust (repeatable)")
    report = parser.add_argument_group("the report")
    report.add_argument("--out", type=Path, default=ROOT / "load-report", help="folder for the report (emptied first)")
    report.add_argument("--drain-s", type=float, default=30, help="how long to wait for sent notifications to settle")
    report.add_argument("--check-max", type=int, default=20000, help="check at most this many ids (a uniform sample beyond)")
    report.add_argument("--no-install", action="store_true", help="do not build .venv-load when it is missing")
    args = parser.parse_args(argv)
    unknown = set(args.classes.split(",")) - set(CLASSES)
    if unknown:
        parser.error(f"--classes: unknown {sorted(unknown)}; the classes are {', '.join(CLASSES)}")
    if args.processes > 1 and args.workers:
        parser.error("--processes and --workers are two ways to run several locust processes: choose one")
    if args.duration < 1 or args.users < 1:
        parser.error("--duration and --users must be at least 1")
    if args.users < len(args.classes.split(",")):
        print(f"run_load: note: {args.users} users for {len(args.classes.split(','))} classes: locust gives some classes none "
              "(by weight); raise --users to see every class", file=sys.stderr)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out.resolve()
    marker = out / ".herald-load-report"
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise SystemExit(f"run_load: --out {out} is not empty and not a report folder of this script: choose another")
    if out.exists():  # a report of an earlier run: replace it (nothing else lives there)
        for stale in ("ids", "data"):
            shutil.rmtree(out / stale, ignore_errors=True)
        for path in [*out.glob("locust*"), *out.glob("summary.*"), out / "report.html", out / "herald.log"]:
            path.unlink(missing_ok=True)
    (out / "ids").mkdir(parents=True, exist_ok=True)
    marker.write_text("a folder of loadtests/run_load.py: replaced by its next run\n")
    binary = locust_binary(install=not args.no_install)

    @contextmanager
    def the_node() -> Iterator[Node]:
        if args.host:
            key = args.api_key_file.read_text().strip() if args.api_key_file else args.api_key
            if not key:
                raise SystemExit("run_load: --host needs --api-key, --api-key-file or HERALD_API_KEY")
            yield Node(args.host.rstrip("/"), (args.edge_host or args.host).rstrip("/"), key, how=f"given: {args.host}")
        else:
            with embedded_node(out / "data") as node:
                yield node

    with the_node() as node:
        env = {**os.environ, "HERALD_API_KEY": node.api_key}
        metrics_urls = args.metrics_url or [f"{node.url}/metrics"]
        before = scrape(metrics_urls, node.api_key)
        node_cpu0 = process_cpu_s(node.pid) if node.pid else None
        commands = locust_commands(args, binary, node, out)
        print(f"run_load: node {node.url}; locust for {args.duration} s ({len(commands)} command(s)); report in {out}", flush=True)
        status, locust_cpu = run_locust(commands, env, out / "locust.log", limit_s=args.duration + 120)
        node_cpu = process_cpu_s(node.pid) - node_cpu0 if node.pid and node_cpu0 is not None else None
        sent = read_sent(out / "ids")
        outcome = check_sent(node, sent, args.drain_s, args.check_max, concurrency=16, members=read_topic_members(out / "ids"))
        after = scrape(metrics_urls, node.api_key)
    log_text = (out / "locust.log").read_text(errors="replace")
    text, data = summarize(args, node, out, read_stats(out), outcome, metrics_summary(before, after), locust_cpu, node_cpu,
                           status, TOPICS_MISSING_MARK in log_text)
    (out / "summary.txt").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    print(text)
    if not data["per_type"]:
        print(f"run_load: locust wrote no statistics; the end of {out / 'locust.log'}:\n" + "\n".join(log_text.splitlines()[-30:]))
        return 1
    return 0 if data["failures"] == 0 and data["lost"] == 0 and not outcome.errors and not math.isnan(data["requests_per_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
