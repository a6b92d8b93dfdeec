"""The scripted providers of a simulation: latency from a log-normal, random errors, outages, throttling windows.

Each stands where a channel's sandbox client stands (a ChannelClient: actors/provider.py)
and answers as a provider would: Sent after its latency; RetryLater for a random error or
during an outage (after its latency, or after `timeout_s` for a timeout outage); during a
throttling window, beyond `rate_per_s` calls in a second (a fractional rate spread over the seconds), a 429 (RetryLater, throttled,
after_s = retry_after_s). Every random draw comes from the generator it is given.
It notes each Sent's delivery delay: the provider's acceptance time minus the time Herald
accepted the notification (Delivery.created_ms), both on the simulation's clock.
"""

from __future__ import annotations

import math
import random

import trio

from protocol.messages import Delivery, Outcome, RetryLater, Sent
from reactor.clock import wall_ms

from .scenario import ProviderScript

Z99 = 2.3263478740408408  # the standard normal's 99th percentile


def allowance(rate_per_s: float, second: int) -> int:
    """The calls a throttling window takes in its `second`: rate_per_s itself when it is whole; a fractional rate
    (a scaled run's: scale.py) spread over the seconds, floor((s + 1) x rate) - floor(s x rate), so it averages out."""
    return math.floor((second + 1) * rate_per_s) - math.floor(second * rate_per_s)


class ScriptedProvider:
    def __init__(self, script: ProviderScript, rng: random.Random, start: float) -> None:
        self.script = script
        self.rng = rng
        self.start = start  # trio.current_time() at the simulation's minute 0
        self._mu = math.log(script.median_ms / 1000)
        self._sigma = max(0.0, (math.log(script.p99_ms) - math.log(script.median_ms)) / Z99)
        self._second = -1  # the throttling window's current second, and the calls taken in it
        self._taken = 0
        self.delays_ms: list[int] = []  # the delays of the Sents since the last drain
        self.calls = 0

    def latency_s(self) -> float:
        return math.exp(self.rng.gauss(self._mu, self._sigma)) if self._sigma > 0 else math.exp(self._mu)

    async def send(self, delivery: Delivery) -> Outcome:
        self.calls += 1
        t = trio.current_time() - self.start
        latency = self.latency_s()
        for outage in self.script.outages:
            if outage.covers(t):
                await trio.sleep(outage.timeout_s if outage.kind == "timeout" else latency)
                return RetryLater(f"scripted outage ({outage.kind})")
        for throttle in self.script.throttles:
            if throttle.covers(t):
                second = int(t)
                if second != self._second:
                    self._second, self._taken = second, 0
                if self._taken >= allowance(throttle.rate_per_s, second):
                    await trio.sleep(latency)
                    return RetryLater("scripted 429", after_s=throttle.retry_after_s, throttled=True)
                self._taken += 1
                break
        failed = self.script.error_rate > 0 and self.rng.random() < self.script.error_rate
        await trio.sleep(latency)
        if failed:
            return RetryLater("scripted error")
        self.delays_ms.append(wall_ms() - delivery.created_ms)
        return Sent()

    def drain_delays(self) -> list[int]:
        delays, self.delays_ms = self.delays_ms, []
        return delays
