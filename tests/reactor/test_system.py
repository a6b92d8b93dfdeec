"""System boot order, graceful shutdown in reverse order, and the deadline."""

import trio
import trio.testing

from reactor.mailbox import Mailbox
from reactor.supervisor import ChildSpec, Supervisor
from reactor.system import System


async def test_boot_in_order_and_shutdown_in_reverse(autojump_clock):
    events = []

    def actor(name: str, work_s: float):
        box: Mailbox[str] = Mailbox(name, 8)

        async def run(*, task_status=trio.TASK_STATUS_IGNORED):
            await trio.sleep(1)  # readiness takes time: the next stage must wait for it
            events.append(f"ready {name}")
            task_status.started()
            async for message in box:
                await trio.sleep(work_s)  # in-flight work finishes after stop
                events.append(f"{name} handled {message}")
            events.append(f"exit {name}")

        return box, ChildSpec(name, run, stop=box.close)

    storage_box, storage = actor("storage", 0.5)
    front_box, front = actor("front", 3)
    system = System([Supervisor("storage", [storage]), Supervisor("front", [front])], grace_s=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        assert events == ["ready storage", "ready front"]
        await front_box.send("req")
        system.request_shutdown()
        await trio.testing.wait_all_tasks_blocked()
        await storage_box.send("write")  # storage still takes work while the front end drains
    assert events[2:] == ["storage handled write", "front handled req", "exit front", "exit storage"]
    assert system.shutdown_log == ["front", "storage"]


async def test_a_stage_that_ignores_stop_is_cancelled_at_the_deadline(autojump_clock):
    async def stubborn(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep_forever()

    system = System([Supervisor("s", [ChildSpec("stubborn", stubborn)])], grace_s=7)
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        start = trio.current_time()
        system.request_shutdown()
    assert trio.current_time() - start == 7
    assert system.shutdown_log == ["s"]


async def test_a_builder_step_builds_its_stages_once_the_stages_before_it_are_ready(autojump_clock):
    """The composition root's shape: the storage stage opens what the next stages are built on."""
    events = []
    opened: list[str] = []
    stop_storage = trio.Event()

    async def storage(*, task_status=trio.TASK_STATUS_IGNORED):
        await trio.sleep(1)
        opened.append("backends")
        task_status.started()
        await stop_storage.wait()
        events.append("storage closed")

    async def build():
        events.append(f"build on {opened}")
        box: Mailbox[str] = Mailbox("worker", 8)

        async def worker(*, task_status=trio.TASK_STATUS_IGNORED):
            task_status.started()
            async for _ in box:
                pass
            events.append("worker stopped")

        return [Supervisor("work", [ChildSpec("worker", worker, stop=box.close)])]

    system = System([Supervisor("storage", [ChildSpec("backends", storage, stop=stop_storage.set)]), build], grace_s=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(system.run)
        assert events == ["build on ['backends']"]
        assert [s.name for s in system.supervisors()] == ["storage", "work"]
        system.request_shutdown()
    assert events[1:] == ["worker stopped", "storage closed"]
    assert system.shutdown_log == ["work", "storage"]
