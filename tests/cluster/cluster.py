"""Herald as a cluster of processes on loopback: `herald serve --role api|worker|edge` nodes sharing the real
engines (Kafka, Redis, PostgreSQL, Cassandra) through their URLs, each node with a data dir of its own.

A node is started with its settings in HERALD_* env vars and `--json` (one line saying its URL once it
serves); it is stopped with SIGTERM, or killed with SIGKILL (kill -9) by a scenario. Every process it starts
is killed when the Cluster closes.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERALD = Path(sys.executable).parent / "herald"  # the console script of this venv


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the test process dies (a killed pytest leaves no node behind)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass(frozen=True)
class EngineUrls:
    """Where the shared engines are; each cluster's data is apart by its prefix (topics, keys, schema, keyspace)."""

    kafka: str  # kafka://host:port
    redis: str  # redis://host:port/db
    postgres: str  # postgresql://...
    cassandra: str  # cassandra://host:port

    def env(self, prefix: str) -> dict[str, str]:
        return {
            "HERALD_BUS": f"{self.kafka}?prefix={prefix}.",
            "HERALD_STATE": f"{self.redis}?prefix={prefix}:",
            "HERALD_BROKER": f"{self.redis}?prefix={prefix}:",
            "HERALD_STORE": f"{self.postgres}?schema={prefix}",
            "HERALD_LOGSTORE": f"{self.cassandra}/{prefix}",
        }


@dataclass
class Node:
    role: str
    name: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    url: str  # "" for a worker (no front end)
    log: Path

    def sink_lines(self, channel: str) -> list[dict[str, Any]]:
        """The lines of this node's sandbox sink of `channel` (sms, push), each a delivery a provider took."""
        path = self.data_dir / f"{channel}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, seconds: float = 15.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(seconds)
            except subprocess.TimeoutExpired:
                self.kill9()


@dataclass
class Cluster:
    urls: EngineUrls | None  # None: the embedded backends (only the role all then)
    root: Path
    prefix: str
    settings: dict[str, str] = field(default_factory=dict)  # HERALD_* of every node
    nodes: dict[str, Node] = field(default_factory=dict)

    def start(self, role: str, name: str, seconds: float = 120.0, **settings: str) -> Node:
        """Start a node and return once it says it serves (RuntimeError with its log's tail if it cannot)."""
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        env = {**os.environ, **(self.urls.env(self.prefix) if self.urls else {}), "HERALD_DATA_DIR": str(data_dir), "HERALD_LOG_LEVEL": "WARNING",
               **self.settings, **settings}
        env.pop("HERALD_CONFIG", None)
        with log.open("ab") as err:
            process = subprocess.Popen([str(HERALD), "serve", "--role", role, "--port", "0", "--json"],
                                       stdout=subprocess.PIPE, stderr=err, env=env, cwd=self.root,
                                       preexec_fn=_die_with_parent)
        assert process.stdout is not None
        deadline = time.monotonic() + seconds
        line = b""
        while not line.endswith(b"\n"):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise RuntimeError(f"{name} ({role}) did not start: {log.read_text(errors='replace')[-3000:]}")
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(process.stdout.fileno(), 4096)
                line += chunk
        node = Node(role, name, data_dir, process, json.loads(line)["url"], log)
        self.nodes[name] = node
        return node

    def api_key(self) -> str:
        """The cluster's bootstrap key: its text is in the data dir of the node that generated it (the first)."""
        for node in self.nodes.values():
            key_file = node.data_dir / "api-key"
            if key_file.exists():
                return key_file.read_text().strip()
        raise RuntimeError("no node holds the bootstrap key's text")

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()

    def of(self, role: str, alive: bool = True) -> list[Node]:
        return [n for n in self.nodes.values() if n.role == role and (n.alive() or not alive)]


def sink_counts(sent: list[str], workers: list[Node], channel: str) -> dict[str, int]:
    """sent, delivered (distinct ids in the workers' sinks), lost (sent, in no sink), duplicates (a provider took
    an id more than once: lines beyond the first per id, across the workers)."""
    lines = [line["notification_id"] for w in workers for line in w.sink_lines(channel)]
    counted = Counter(lines)
    mine = set(sent)
    delivered = {nid for nid in counted if nid in mine}
    return {
        "sent": len(sent),
        "delivered": len(delivered),
        "lost": len(mine - delivered),
        "duplicates": sum(n - 1 for nid, n in counted.items() if nid in mine),
    }
