"""What the Provider's gate costs per admission: local slices vs one State call per delivery.

A benchmark script, not a test. Run from the project root:

    .venv/bin/python loadtests/gate_bench.py [--seconds 2] [--workers 1] [--rtt-ms 1]

Each run drives `--workers` gates (actors/services/gate.py) of one channel over one State,
each worker admitting and settling deliveries back to back for `--seconds` of wall time,
with limits far above what they reach (the bucket never throttles: this measures the
gate's own cost). Two gate settings, run alternately in the same process:

* slices: the defaults but for the slice size, `--slice` tokens per lease round trip (150
  by default: a push slice, 0.05 s of 3,000/s; the limits here never throttle, so the size
  is set directly), the breaker's view read at most every 50 ms;
* per delivery: slices of one token and `refresh_s = 0`, i.e. a lease round trip and a
  breaker read for every delivery: what sharing the bucket and breaker would cost without
  local slices.

Two States: the embedded one in memory (a State call is a function call), and the same
behind a simulated network round trip of `--rtt-ms` (a trio.sleep before each call;
Trio's timers round it up to about a millisecond). Prints admissions per second for each,
State calls per 1,000 admissions, and the ratio slices / per delivery of each pair.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio.lowlevel

from actors.services.gate import GateSettings, Limits, ResilienceGate
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, Sent
from reactor.backends.embedded import MemoryState
from reactor.circuit_breaker import BreakerConfig

PER_DELIVERY = GateSettings(slice_s=0.0, refresh_s=0.0)
LIMITS = Limits(1e9, 1e9, BreakerConfig())  # never throttles: the gate's own cost only


class RemoteState:
    """The embedded State behind a simulated network round trip (each call sleeps `rtt_s` first)."""

    def __init__(self, rtt_s: float) -> None:
        self.inner = MemoryState()
        self.rtt_s = rtt_s
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            await trio.sleep(self.rtt_s)
            return await method(*args, **kwargs)

        return call


async def run(settings: GateSettings, rtt_s: float | None, workers: int, seconds: float) -> tuple[float, float]:
    """(admissions per second, State calls per 1,000 admissions)."""
    state: Any = MemoryState() if rtt_s is None else RemoteState(rtt_s)
    gates = [ResilienceGate(Channel.SMS.value, LIMITS, state, settings, owner=f"w{i}") for i in range(workers)]
    content = Content(sms=SmsContent("hi"))
    delivery = Delivery("01J0000000000000000000BENCH", "u1", Channel.SMS, 0, content, address="+15555550100")
    admitted = [0] * workers
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        gate = gates[i]
        while time.perf_counter() < deadline:
            for _ in range(100):
                await gate.admit(delivery)
                await gate.settle(delivery, Sent())
            admitted[i] += 100
            await trio.lowlevel.checkpoint()  # let the other workers run

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(worker, i)
    elapsed = time.perf_counter() - start
    total = sum(admitted)
    calls = sum(g.lease_round_trips + g.breaker_round_trips for g in gates)
    return total / elapsed, 1000 * calls / max(total, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time of each run")
    parser.add_argument("--workers", type=int, default=1, help="gates sharing the State, each admitting back to back")
    parser.add_argument("--rtt-ms", type=float, default=1.0, help="the simulated round trip of the remote State")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each setting; the median is reported")
    parser.add_argument("--slice", type=int, default=150, help="tokens per lease round trip with slices")
    args = parser.parse_args()
    slices = GateSettings(slice_s=args.slice / LIMITS.refill_per_s)
    assert slices.slice_tokens(LIMITS) == args.slice

    for label, rtt in (("embedded State in memory", None), (f"State {args.rtt_ms:g} ms away (simulated)", args.rtt_ms / 1000)):
        runs: dict[str, list[tuple[float, float]]] = {"slices": [], "per delivery": []}
        for _ in range(args.rounds):
            for name, settings in (("slices", slices), ("per delivery", PER_DELIVERY)):
                runs[name].append(trio.run(run, settings, rtt, args.workers, args.seconds))
        rate = {name: statistics.median(r[0] for r in result) for name, result in runs.items()}
        calls = {name: statistics.median(r[1] for r in result) for name, result in runs.items()}
        print(f"gate admissions/s, {args.workers} worker(s), {label}: "
              f"slices of {args.slice} {rate['slices']:,.0f}/s ({calls['slices']:.2f} State calls per 1,000) | "
              f"a State call per delivery {rate['per delivery']:,.0f}/s ({calls['per delivery']:.0f} per 1,000) | "
              f"ratio {rate['slices'] / rate['per delivery']:.1f}")


if __name__ == "__main__":
    main()
