"""The Gateway talks to actors by messages, never through their objects (issue 9 item 5).

GET /v1/admin/circuits is a CircuitQuery to each Provider, answered by the Provider's own
task even while its attempts wait (a call that hangs, an open breaker); each is bound in
time, and a Provider that does not answer shows as `unavailable` instead of holding the
request. The Gateway holds mailboxes, ports and stateless services: no actor object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import trio

from actors.consumer import ConsumerGroup
from actors.ingress import Ingress
from actors.jobs import Jobs
from actors.provider import Provider
from actors.recorder import Recorder
from actors.registry import ConnectionRegistry
from actors.scheduler import Scheduler
from protocol.channels import Channel
from protocol.messages import Sent
from reactor.mailbox import Mailbox, Overflow
from tests.actors.test_admin_api import sms
from tests.helpers import http, running_node

ACTORS = (Provider, Scheduler, ConnectionRegistry, Recorder, Ingress, Jobs, ConsumerGroup)


class Hangs:
    """An SMS provider whose calls never come back (until released)."""

    def __init__(self) -> None:
        self.release = trio.Event()

    async def send(self, delivery):
        await self.release.wait()
        return Sent()


def by_channel(circuits: list[dict]) -> dict[str, dict]:
    return {c["channel"]: c for c in circuits}


async def test_a_provider_stuck_in_a_call_still_answers_its_circuit(tmp_path):
    client = Hangs()
    async with running_node(tmp_path, clients={Channel.SMS: client}) as herald, http(herald) as api:
        await api.post("/v1/notifications", json=sms("stuck"))
        with trio.fail_after(10):
            while herald.providers[Channel.SMS].calls < 1:
                await trio.sleep(0.01)
        circuits = by_channel((await api.get("/v1/admin/circuits")).json()["circuits"])  # the attempt is still out
        assert (circuits["sms"]["state"], circuits["sms"]["calls"], circuits["sms"]["detail"]) == ("closed", 1, "")
        assert circuits["sms"]["bucket_capacity"] > 0
        client.release.set()


async def test_a_provider_that_does_not_answer_is_shown_unavailable_not_waited_for(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as api:
        gateway = herald.gateway
        assert gateway is not None
        gateway.query_timeout_s = 0.2
        unread: Mailbox = Mailbox("nobody reads this", 1, Overflow.FAIL_FAST)
        gateway.circuits = {**gateway.circuits, Channel.SMS: unread}
        with trio.fail_after(5):  # the bound is the gateway's, 0.2 s: this only stops a hang
            circuits = by_channel((await api.get("/v1/admin/circuits")).json()["circuits"])
        assert circuits["sms"]["state"] == "unavailable"
        assert circuits["sms"]["detail"] == "provider:sms did not answer within 0.2 s"
        assert (circuits["sms"]["calls"], circuits["sms"]["tokens"]) == (0, 0.0)
        assert {c: v["state"] for c, v in circuits.items() if c != "sms"} == {"email": "closed", "push": "closed", "web": "closed", "webhook": "closed"}
        # its mailbox is full now (the query above is still in it): refused at once
        circuits = by_channel((await api.get("/v1/admin/circuits")).json()["circuits"])
        assert circuits["sms"]["state"] == "unavailable" and "MailboxFull" in circuits["sms"]["detail"]


async def test_the_gateway_holds_no_actor(tmp_path):
    async with running_node(tmp_path) as herald:
        gateway = herald.gateway
        assert gateway is not None
        held = []
        for field in dataclasses.fields(gateway):
            value = getattr(gateway, field.name)
            held += [(field.name, v) for v in (value.values() if isinstance(value, Mapping) else [value])]
        assert [(name, type(v).__name__) for name, v in held if isinstance(v, ACTORS)] == []
        assert not hasattr(gateway, "providers")
        assert all(isinstance(m, Mailbox) for m in gateway.circuits.values()) and set(gateway.circuits) == set(Channel)
