"""What the batch path's per-item work relies on: ids encoded in a block, the partition cache, structs the collector skips."""

from __future__ import annotations

import gc
import random

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.preferences import ChannelPlan
from actors.ingress import IdGenerator
from actors.services.template_service import Applied
from protocol.api import BatchItem, NotificationRequest, Receipt
from protocol.channels import Channel
from protocol.content import Content, WebContent
from protocol.ids import IdEncoder, is_notification_id, make_notification_id
from protocol.lifecycle import Status
from protocol.messages import Delivery, StatusEvent
from protocol.write_plan import AddStep, CountOnce, Counter, KeyState, MoveStatus, TimelineRow
from reactor.partitioner import cached_partition, kafka_partition

_MS = st.integers(0, 2**48 - 1)
_ENTROPY = st.integers(0, 2**81)  # past 80 bits too: make_notification_id keeps the low 80


@settings(max_examples=300)
@given(st.lists(st.tuples(_MS, _ENTROPY, st.integers(0, 3000)), min_size=1, max_size=20))
def test_the_encoder_makes_the_ids_make_notification_id_makes(runs: list[tuple[int, int, int]]) -> None:
    """Runs of ids counting up within a millisecond (carrying past the kept characters), and jumps between them."""
    encoder = IdEncoder()
    for ms, entropy, count in runs:
        for e in range(entropy, entropy + count, max(1, count // 40)):
            assert encoder.encode(ms, e) == make_notification_id(ms, e)
        assert encoder.encode(ms, entropy + 2**20 - 1) == make_notification_id(ms, entropy + 2**20 - 1)  # the low 20 bits carry


def test_the_encoder_refuses_a_time_out_of_range() -> None:
    encoder = IdEncoder()
    for ms in (-1, 2**48):
        try:
            encoder.encode(ms, 0)
        except ValueError:
            continue
        raise AssertionError(f"{ms} was encoded")


def test_the_generator_counts_up_within_a_millisecond_as_before() -> None:
    """The same seed, the same ids as make_notification_id over the entropy it counts (herald simulate's ids)."""
    ids = IdGenerator(random.Random(7))
    made = [ids.next(1_700_000_000_000 + i // 50) for i in range(500)]
    rng = random.Random(7)
    expected = []
    for ms in range(1_700_000_000_000, 1_700_000_000_010):
        start = rng.getrandbits(79)
        expected += [make_notification_id(ms, start + n) for n in range(50)]
    assert made == expected
    assert made == sorted(made) and all(is_notification_id(nid) for nid in made)


@given(st.binary(max_size=64), st.integers(1, 64))
def test_the_partition_cache_answers_as_the_partitioner(key: bytes, partitions: int) -> None:
    assert cached_partition(key, partitions) == kafka_partition(key, partitions)
    assert cached_partition(key, partitions) == kafka_partition(key, partitions)  # from the cache now


def test_the_batch_paths_structs_are_not_tracked_by_the_collector() -> None:
    """A batch of 1,000 keeps ~10 structs per item alive across young collections: untracked, the collector neither
    counts their allocations nor walks them (msgspec's gc=False: none of them can be part of a reference cycle)."""
    request = msgspec.json.decode(
        b'{"user_id":"u","channels":["web"],"content":{"web":{"title":"t"}},"data":{"k":[1]}}', type=NotificationRequest
    )
    content = Content(web=WebContent("t"))
    made = [
        request, request.content, content, content.web, Receipt("n"), BatchItem("n"),
        Delivery("n", "u", Channel.WEB, 1, content, data={"k": [1]}),
        StatusEvent("n", "u", Channel.WEB, Status.QUEUED, 1),
        AddStep("n", "web", 1, Status.QUEUED, "", 1), CountOnce("n", "web", 0, Counter.SENT, "2026-12-01", 0),
        MoveStatus("n", "web", "u", "normal", 1, Status.QUEUED, 1, 1, "", frozenset(), True),
        TimelineRow(1, Status.QUEUED, "", 1), KeyState("n", "web", "u", "normal", 1, Status.QUEUED, 0, ()),
        ChannelPlan(Channel.WEB), Applied(request, "", request.data),  # the planning's per-channel and template steps
    ]
    assert [type(m).__name__ for m in made if gc.is_tracked(m)] == []
    assert gc.is_tracked(request.data)  # what they hold is tracked as ever


def test_contents_fields_are_named_by_the_channels_values() -> None:
    """check_request reads a channel's part as getattr(content, channel.value): as Content.for_channel does."""
    content = Content(web=WebContent("t"))
    for channel in Channel:
        assert getattr(content, channel.value) is content.for_channel(channel.value)
