"""The Kafka Bus through the asyncio bridge vs aiokafka alone in one asyncio loop: produce and consume rates.

A benchmark script, not a test (issue 11 item 7; the goal: bridge/plain >= 0.7). Run from the project root:

    .venv/bin/python loadtests/kafka_bridge_bench.py [--records 50000] [--batch 100] [--producers 8] [--rounds 2]

It starts the suite's Kafka (tests/servers.py kafka_server: .engines/kafka, scripts/install-engines.sh
kafka), or uses `--bootstrap host:port`. Each round, on a fresh topic of `--partitions` partitions:

    plain    a separate Python process (this file with `_plain`): asyncio.run, one idempotent acks=all
             AIOKafkaProducer, `--producers` coroutines each sending `--batch` records then awaiting
             their acknowledgements, until `--records`; then one consumer assigned every partition
             reads them all back (getmany, 500 at most a call);
    bridge   here, under Trio: Herald's Kafka Bus (reactor/backends/kafka) on the same broker, the same
             shape: `--producers` tasks each calling bus.produce with `--batch` records; then one task
             per partition fetching (500 at most a call) until every record came back.

The same keys (user-<i>), values (`--value-bytes`) and partitioner (murmur2) on both sides. Prints
records/s of each side and phase per round, and the CPU (this process's, us a record: the broker's is apart),
the medians and the ratios. On a shared, loaded machine the CPU ratio is the steadier figure. Every step is
bounded in time; the broker is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 100  # records produced before the clock starts (a new topic's leaders are not known at once)


def _payload(i: int, size: int) -> tuple[bytes, bytes]:
    return b"user-%d" % (i % 10_000), (b"%08d" % i).ljust(size, b".")


def plain(bootstrap: str, topic: str, records: int, batch: int, producers: int, value_bytes: int, partitions: int) -> dict[str, float]:
    """aiokafka alone in one asyncio loop (runs in its own process)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    async def main() -> dict[str, float]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        for future in [await producer.send(topic, b"warm-up", key=b"user-%d" % i) for i in range(WARM_UP)]:
            await future  # not timed: metadata and leaders known, connections open
        counter = iter(range(records))

        async def produce() -> None:
            while True:
                chunk = [i for _, i in zip(range(batch), counter)]
                if not chunk:
                    return
                futures = []
                for i in chunk:
                    key, value = _payload(i, value_bytes)
                    futures.append(await producer.send(topic, value, key=key))
                for future in futures:
                    await future

        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.wait_for(asyncio.gather(*(produce() for _ in range(producers))), 300)
        produced, produce_cpu = time.perf_counter() - began, time.process_time() - cpu
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        began, cpu, got = time.perf_counter(), time.process_time(), 0
        deadline = began + 300
        while got < records and time.perf_counter() < deadline:
            for batch_ in (await consumer.getmany(timeout_ms=1000, max_records=500)).values():
                got += len(batch_)
        consumed, consume_cpu = time.perf_counter() - began, time.process_time() - cpu
        await consumer.stop()
        return {"produce_per_s": records / produced, "consume_per_s": got / consumed, "consumed": got,
                "produce_cpu_us": produce_cpu / records * 1e6, "consume_cpu_us": consume_cpu / got * 1e6}

    return asyncio.run(main())


def run_plain(bootstrap: str, topic: str, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "_plain", bootstrap, topic, str(args.records), str(args.batch), str(args.producers),
         str(args.value_bytes), str(args.partitions)],
        check=True, stdout=subprocess.PIPE, timeout=900, cwd=ROOT,
    )
    return json.loads(out.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


def create_topic(bootstrap: str, prefix: str, partitions: int) -> None:
    """The topic `{prefix}b`, made the way the bus makes its own (opening it once)."""
    import trio

    sys.path.insert(0, str(ROOT))
    from reactor.backends import BackendSettings, open_backends

    async def main() -> None:
        settings = BackendSettings({"bus": f"kafka://{bootstrap}?prefix={prefix}"}, Path(tempfile.gettempdir()), {"b": partitions})
        async with open_backends(settings, ["bus"]):
            pass

    trio.run(main)


def run_bridge(bootstrap: str, prefix: str, args: argparse.Namespace) -> dict[str, float]:
    import trio

    sys.path.insert(0, str(ROOT))
    from reactor.backends import BackendSettings, open_backends

    async def main() -> dict[str, float]:
        settings = BackendSettings({"bus": f"kafka://{bootstrap}?prefix={prefix}"}, Path(tempfile.gettempdir()), {"b": args.partitions})
        async with open_backends(settings, ["bus"]) as backends:
            bus = backends.bus
            await bus.produce([("b", b"user-%d" % i, b"warm-up") for i in range(WARM_UP)])  # not timed
            counter = iter(range(args.records))

            async def produce() -> None:
                while True:
                    chunk = [i for _, i in zip(range(args.batch), counter)]
                    if not chunk:
                        return
                    await bus.produce([("b", *_payload(i, args.value_bytes)) for i in chunk])

            began, cpu = time.perf_counter(), time.process_time()
            with trio.fail_after(300):
                async with trio.open_nursery() as nursery:
                    for _ in range(args.producers):
                        nursery.start_soon(produce)
            produced, produce_cpu = time.perf_counter() - began, time.process_time() - cpu
            ends = [await bus.end_offset("b", p) for p in range(args.partitions)]
            got = 0

            async def consume(partition: int) -> None:
                nonlocal got
                offset = 0
                while offset < ends[partition]:
                    records = await bus.fetch("bench", "b", partition, offset, 500)
                    got += len(records)
                    offset = records[-1].offset + 1

            for partition in range(args.partitions):  # not timed: each partition's reader started (plain's consumer is, too)
                await bus.fetch("bench", "b", partition, 0, 1)
            began, cpu = time.perf_counter(), time.process_time()
            with trio.fail_after(300):
                async with trio.open_nursery() as nursery:
                    for partition in range(args.partitions):
                        nursery.start_soon(consume, partition)
            consumed, consume_cpu = time.perf_counter() - began, time.process_time() - cpu
            return {"produce_per_s": args.records / produced, "consume_per_s": got / consumed, "consumed": got,
                    "produce_cpu_us": produce_cpu / args.records * 1e6, "consume_cpu_us": consume_cpu / got * 1e6}

    return trio.run(main)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_plain":
        bootstrap, topic, *numbers = sys.argv[2:]
        records, batch, producers, value_bytes, partitions = map(int, numbers)
        print(json.dumps(plain(bootstrap, topic, records, batch, producers, value_bytes, partitions)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=100, help="records per produce call")
    parser.add_argument("--producers", type=int, default=8, help="concurrent producing tasks")
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", help="an existing broker (host:port); default: start the suite's Kafka")
    args = parser.parse_args()
    with ExitStack() as stack:
        bootstrap = args.bootstrap
        if bootstrap is None:
            sys.path.insert(0, str(ROOT))
            from tests.servers import kafka_server

            server = stack.enter_context(kafka_server(Path(tempfile.mkdtemp(prefix="herald-kafka-bench-"))))
            bootstrap = server.bootstrap
            print(f"kafka started in {server.started_s:.1f} s at {bootstrap}")
        rows: list[tuple[dict[str, float], dict[str, float]]] = []
        for round_ in range(args.rounds):
            prefix, other = f"bench{uuid.uuid4().hex[:8]}.", f"bench{uuid.uuid4().hex[:8]}."
            create_topic(bootstrap, other, args.partitions)  # plain's topic, as the bus creates its own
            if round_ % 2 == 0:
                bridge = run_bridge(bootstrap, prefix, args)
                plain_ = run_plain(bootstrap, f"{other}b", args)
            else:
                plain_ = run_plain(bootstrap, f"{other}b", args)
                bridge = run_bridge(bootstrap, prefix, args)
            rows.append((plain_, bridge))
            print(f"round {round_ + 1}: produce plain {plain_['produce_per_s']:,.0f}/s bridge {bridge['produce_per_s']:,.0f}/s; "
                  f"consume plain {plain_['consume_per_s']:,.0f}/s bridge {bridge['consume_per_s']:,.0f}/s "
                  f"(consumed {plain_['consumed']:.0f} / {bridge['consumed']:.0f}); CPU us a record: produce plain "
                  f"{plain_['produce_cpu_us']:.1f} bridge {bridge['produce_cpu_us']:.1f}, consume plain {plain_['consume_cpu_us']:.1f} "
                  f"bridge {bridge['consume_cpu_us']:.1f}")
        for phase in ("produce_per_s", "consume_per_s"):
            p = statistics.median(r[0][phase] for r in rows)
            b = statistics.median(r[1][phase] for r in rows)
            print(f"median {phase}: plain {p:,.0f} bridge {b:,.0f} ratio bridge/plain {b / p:.2f}")
        for phase in ("produce_cpu_us", "consume_cpu_us"):
            p = statistics.median(r[0][phase] for r in rows)
            b = statistics.median(r[1][phase] for r in rows)
            print(f"median {phase}: plain {p:.1f} bridge {b:.1f}: plain/bridge {p / b:.2f} (the CPU-bound throughput ratio)")


if __name__ == "__main__":
    main()
