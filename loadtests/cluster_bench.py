"""Cluster throughput on loopback (issue 11 item 7): api accepted/s and worker deliveries/s of a cluster of
processes on the real engines (1 api and 2 worker `herald serve --role ...` processes sharing Kafka, Redis,
PostgreSQL and Cassandra), beside the embedded single node (`herald serve`, role all) in the same run; the
cluster's figures are printed as ratios of the single node's.

Load: `--count` SMS notifications (distinct users, so every partition gets some), POSTed by `--connections`
keep-alive connections (benchlib.RawHttp) as fast as they are answered; the SMS rate limit is lifted (capacity
and refill 1,000,000/s), the sandbox sink takes the deliveries (each worker its own sms.jsonl, fsynced).
- accepted/s: count / seconds from the first POST sent to the last 202 answered;
- deliveries/s: count / seconds from the first POST to the last delivery's line in a sink (its at_ms).

The engines are started by this script (tests/servers.py: Kafka ~10 s, Cassandra ~40-60 s on 2 cores), or
reused: `--urls FILE` naming a JSON object {"kafka": ..., "redis": ..., "postgres": ..., "cassandra": ...}.
The client shares the machine's cores with every server: the figures are of this machine, loopback.

    .venv/bin/python loadtests/cluster_bench.py                 # ~2-3 min, engines included
    .venv/bin/python loadtests/cluster_bench.py --count 5000 --urls urls.json
    .venv/bin/python loadtests/cluster_bench.py --breakdown     # and the single node with one engine at a time
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtests"))

from benchlib import LOOPBACK, RawHttp, check_limits  # noqa: E402
from tests.cluster.cluster import Cluster, EngineUrls, Node  # noqa: E402

SETTINGS = {"HERALD_LIMITS": "sms.capacity=1000000,sms.refill_per_s=1000000", "HERALD_LOG_LEVEL": "WARNING"}


async def post_all(url: str, key: str, count: int, connections: int) -> tuple[float, float]:
    """POST `count` SMS notifications over `connections` connections; (wall ms of the first send, seconds to the last 202)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    assert host == LOOPBACK, url
    todo = iter(range(count))
    refused: list[tuple[int, bytes]] = []

    async def one_connection() -> None:
        client = RawHttp(host, int(port), key)
        try:
            for i in todo:
                body = json.dumps({"user_id": f"bench-{i}", "channels": ["sms"], "content": {"sms": {"text": f"n{i}"}},
                                   "to": {"phone": "+15555550100"}}).encode()
                status, answer = await client.request("POST", "/v1/notifications", body)
                if status != 202:
                    refused.append((status, answer))
        finally:
            await client.aclose()

    first_ms = time.time() * 1000
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one_connection)
    if refused:
        raise RuntimeError(f"{len(refused)} POSTs refused, e.g. {refused[0]}")
    return first_ms, time.monotonic() - started


def delivered(workers: list[Node]) -> list[int]:
    """The at_ms of every SMS line in the workers' sinks."""
    return [line["at_ms"] for w in workers for line in w.sink_lines("sms")]


def measure(cluster: Cluster, api: Node, workers: list[Node], count: int, connections: int, seconds: float) -> dict[str, Any]:
    first_ms, post_s = trio.run(post_all, api.url, cluster.api_key(), count, connections)
    deadline = time.monotonic() + seconds
    while len(at := delivered(workers)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(at)} of {count} delivered within {seconds} s")
        time.sleep(0.2)
    deliver_s = (max(at) - first_ms) / 1000
    return {"count": count, "accepted_per_s": count / post_s, "deliveries_per_s": count / deliver_s,
            "post_s": round(post_s, 2), "deliver_s": round(deliver_s, 2)}


def embedded(root: Path, count: int, connections: int, seconds: float) -> dict[str, Any]:
    cluster = Cluster(None, root / "embedded", "emb", dict(SETTINGS))
    try:
        node = cluster.start("all", "single")
        return measure(cluster, node, [node], count, connections, seconds)
    finally:
        cluster.close()


def one_engine(urls: EngineUrls, setting: str, root: Path, count: int, connections: int, seconds: float) -> dict[str, Any]:
    """The single node (role all) with one port setting on its engine, the others embedded: where the cluster's time goes."""
    prefix = f"one{uuid.uuid4().hex[:8]}"
    cluster = Cluster(None, root / prefix, prefix, {**SETTINGS, setting: urls.env(prefix)[setting]})
    try:
        node = cluster.start("all", "single")
        return measure(cluster, node, [node], count, connections, seconds)
    finally:
        cluster.close()


def distributed(urls: EngineUrls, root: Path, count: int, connections: int, seconds: float) -> dict[str, Any]:
    cluster = Cluster(urls, root / "cluster", f"bench{uuid.uuid4().hex[:8]}", dict(SETTINGS))
    try:
        api = cluster.start("api", "api")
        workers = [cluster.start("worker", f"worker{i}") for i in (1, 2)]
        time.sleep(5)  # the workers' consumer group settles (its first rebalance), outside the measure
        return measure(cluster, api, workers, count, connections, seconds)
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="SMS notifications per setup (default 3000)")
    parser.add_argument("--connections", type=int, default=16, help="client connections (default 16)")
    parser.add_argument("--seconds", type=float, default=300, help="how long the deliveries may take per setup (default 300)")
    parser.add_argument("--breakdown", action="store_true", help="also the single node with one engine at a time (the others embedded)")
    parser.add_argument("--urls", type=Path, help="a JSON file naming running engines (else they are started here)")
    args = parser.parse_args()
    check_limits(parser, [(1 <= args.count <= 1_000_000, "--count is 1 to 1,000,000"),
                          (1 <= args.connections <= 256, "--connections is 1 to 256"),
                          (0 < args.seconds <= 3600, "--seconds is above 0, at most 3600")])
    root = Path(tempfile.mkdtemp(prefix="herald-cluster-bench-"))
    with ExitStack() as stack:
        if args.urls:
            found = json.loads(args.urls.read_text())
            urls = EngineUrls(found["kafka"], found["redis"], found["postgres"], found["cassandra"])
        else:
            from tests.servers import cassandra_server, kafka_server, postgres_server, redis_server

            started = time.monotonic()
            urls = EngineUrls(stack.enter_context(kafka_server(root / "kafka")).url, stack.enter_context(redis_server(root / "redis")).url,
                              stack.enter_context(postgres_server()).url, stack.enter_context(cassandra_server(root / "cassandra")).url)
            print(f"engines started in {time.monotonic() - started:.0f} s", flush=True)
        single = embedded(root, args.count, args.connections, args.seconds)
        print(f"embedded single node: {json.dumps(single)}", flush=True)
        many = distributed(urls, root, args.count, args.connections, args.seconds)
        print(f"cluster (1 api, 2 workers; Kafka, Redis, PostgreSQL, Cassandra): {json.dumps(many)}", flush=True)
        alone = {}
        if args.breakdown:
            for setting in ("HERALD_BUS", "HERALD_STATE", "HERALD_STORE", "HERALD_LOGSTORE"):
                alone[setting] = one_engine(urls, setting, root, args.count, args.connections, args.seconds)
                print(f"single node, {setting} on its engine only: {json.dumps(alone[setting])}", flush=True)
    for figure in ("accepted_per_s", "deliveries_per_s"):
        print(f"{figure}: embedded {single[figure]:,.0f}, cluster {many[figure]:,.0f}, cluster/embedded {many[figure] / single[figure]:.2f}")
        for setting, found in alone.items():
            print(f"    single node with {setting} only: {found[figure]:,.0f}, /embedded {found[figure] / single[figure]:.2f}")


if __name__ == "__main__":
    main()
