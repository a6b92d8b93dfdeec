"""`herald tail` follows notifications live; `herald dlq replay` shows its progress and can be interrupted safely; --json."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from typing import Any

import pytest
import trio
from rich.console import Console

import actors.cli
from actors.cli import main as cli
from actors.tail import Timelines
from protocol.channels import Channel
from protocol.messages import RetryLater, Sent
from tests.helpers import http, running_node, wait_final, web_notification
from tests.process import HERALD, ROOT


async def _lines(stream: Any, sink: list[str]) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        sink.extend(line.decode() for line in lines)


async def test_tail_shows_a_notifications_timeline_as_it_happens_for_the_user_asked(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, trio.open_nursery() as nursery:
        command = [*HERALD, "tail", "--user", "tail-me", "--json", "--server", herald.url, "--api-key", "test-key"]
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(ROOT))
        out: list[str] = []
        err: list[str] = []
        nursery.start_soon(_lines, process.stdout, out)
        nursery.start_soon(_lines, process.stderr, err)
        try:
            with trio.fail_after(30):
                while not any("following" in line for line in err):
                    await trio.sleep(0.05)
            other = (await client.post("/v1/notifications", json=web_notification("someone-else", "Not mine"))).json()["notification_id"]
            mine = (await client.post("/v1/notifications", json=web_notification("tail-me", "Mine"))).json()["notification_id"]
            await wait_final(client, mine)
            with trio.fail_after(30):
                while not any(json.loads(line)["status"] == "sent" for line in out if line):
                    await trio.sleep(0.05)
        finally:
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
            nursery.cancel_scope.cancel()
    steps = [json.loads(line) for line in out if line]
    assert {s["notification_id"] for s in steps} == {mine}, (steps, other)
    assert [s["status"] for s in steps][0] == "accepted" and "sent" in [s["status"] for s in steps]
    assert all(s["user_id"] == "tail-me" and s["channel"] == "web" for s in steps)


def test_timelines_print_each_step_once_and_filter_by_channel():
    timelines = Timelines(channel="sms")
    assert timelines.offer("n1", "u", ["sms", "email"]) and not timelines.offer("n1", "u", ["sms"])
    assert not timelines.offer("n2", "u", ["email"])
    view = {"final": False, "channels": {
        "sms": {"attempts": [{"status": "accepted", "at": "2026-01-01T00:00:00.000Z"}, {"status": "queued", "at": "2026-01-01T00:00:00.001Z"}]},
        "email": {"attempts": [{"status": "accepted", "at": "2026-01-01T00:00:00.000Z"}]},
    }}
    assert [s.status for s in timelines.steps("n1", view, 0.0)] == ["accepted", "queued"]
    view["channels"]["sms"]["attempts"].append({"status": "delivered", "at": "2026-01-01T00:00:01.000Z"})
    view["final"] = True
    assert [s.status for s in timelines.steps("n1", view, 1.0)] == ["delivered"]
    assert timelines.done(1.0 + 29) == [] and timelines.done(1.0 + 31) == ["n1"]


class Switchable:
    def __init__(self) -> None:
        self.down = True

    async def send(self, delivery: Any) -> Any:
        return RetryLater("provider down") if self.down else Sent()


def sms(user: str) -> dict[str, Any]:
    return {"user_id": user, "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}


async def _dead_letters(herald: Any, client: Any, provider: Switchable, count: int) -> list[str]:
    ids = [(await client.post("/v1/notifications", json=sms(f"p{i}"))).json()["notification_id"] for i in range(count)]
    for nid in ids:
        assert (await wait_final(client, nid))["channels"]["sms"]["status"] == "dead_lettered"
    provider.down = False
    return ids


async def wait_delivered(client: Any, nid: str) -> None:
    """Until the replayed SMS is delivered (bounded): its status was final (dead_lettered) before the replay."""
    with trio.fail_after(10):
        while (await client.get(f"/v1/notifications/{nid}")).json()["channels"]["sms"]["status"] != "delivered":
            await trio.sleep(0.05)


SETTINGS = {"max_attempts": 1, "retry_initial_s": 0.01, "limits": {"sms": {"failure_threshold": 1000}}}


async def test_dlq_replay_draws_its_progress_on_a_terminal_and_prints_the_job(tmp_path, monkeypatch):
    provider = Switchable()
    async with running_node(tmp_path, clients={Channel.SMS: provider}, **SETTINGS) as herald, http(herald) as client:
        ids = await _dead_letters(herald, client, provider, 3)
        drawn = io.StringIO()
        monkeypatch.setattr(actors.cli, "_progress_console", lambda: Console(file=drawn, force_terminal=True, width=120))
        out = io.StringIO()

        def replay() -> int:
            with contextlib.redirect_stdout(out):
                return cli(["dlq", "replay", "--all", "--server", herald.url, "--api-key", "test-key"])

        assert await trio.to_thread.run_sync(replay) == 0
        job = json.loads(out.getvalue())  # stdout stays JSON: the progress went to the terminal (stderr)
        assert job["state"] == "done" and job["replayed"] == 3
        assert "dlq_replay queued" in drawn.getvalue() or "dlq_replay running" in drawn.getvalue(), drawn.getvalue()
        for nid in ids:
            await wait_delivered(client, nid)


async def test_an_interrupted_replay_goes_on_on_the_node_and_the_cli_says_where(tmp_path, monkeypatch, capsys):
    provider = Switchable()
    async with running_node(tmp_path, clients={Channel.SMS: provider}, **SETTINGS) as herald, http(herald) as client:
        ids = await _dead_letters(herald, client, provider, 2)

        def interrupted(seconds: float) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(actors.cli, "_pause", interrupted)
        code = await trio.to_thread.run_sync(lambda: cli(["dlq", "replay", "--all", "--json", "--server", herald.url, "--api-key", "test-key"]))
        assert code == 130
        err = capsys.readouterr().err
        assert "interrupted: the job goes on on the node; follow it at " + herald.url + "/v1/admin/jobs/" in err, err
        for nid in ids:  # the job went on: the entries are delivered
            await wait_delivered(client, nid)


@pytest.mark.parametrize("command", [["send", "--user", "u", "--title", "t"], ["circuits"], ["dlq", "list"], ["keys", "list"],
                                     ["sandbox", "faults", "show"], ["token", "--user", "u"], ["metrics"], ["tail"], ["listen", "--user", "u"]])
def test_every_client_command_takes_json(command):
    args = actors.cli.parser().parse_args([*command, "--json"])
    assert args.json is True
