"""The README's tour, as a new user runs it: its shell blocks, pasted into one shell, against `make run` on another port.

The blocks of "A 30-second tour" (and its "Real-time" part) are split into commands
the way a shell reads them. Each runs in one bash process, in order, from a directory
where `herald serve` runs with HERALD_PORT set to a free port (not 8080) and the default
data dir, as `make run` would. Each must succeed, and print what its `# -> ` line shows:

- JSON shown is matched by shape: the keys it names with their values, where `...` in an
  object allows more keys, in an array more items, in a string any text; an id shown
  stands for any id. An object or array without `...` must match exactly.
- Text shown (`# -> ...To: alice@example.org...`) must appear, piece by piece, in order.

A command the README says blocks runs under `timeout`; the background listener's output
goes to a file, where the notification the README says it prints must be.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio

from tests.process import ServerProcess, herald_environment, serve_process
from tests.servers import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent
README = ROOT / "README.md"
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


@dataclass
class Command:
    text: str
    comment: str = ""  # the comment lines above it
    expected: str | None = None  # the `# -> ` line after it
    blocks: bool = False  # the README says it blocks
    background: bool = False

    @property
    def again(self) -> bool:
        """The README says to run it again until it shows what it shows (work still on its way)."""
        return "run it again" in self.comment


def tour_blocks(readme: str) -> list[str]:
    """The ```sh blocks from "## A 30-second tour" to the next "## " heading."""
    section = readme.split("\n## A 30-second tour\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def complete(text: str) -> bool:
    """Whether bash reads `text` as whole commands (no open quote, no trailing backslash)."""
    if text.rstrip().endswith("\\"):
        return False
    return subprocess.run(["bash", "-n"], input=text.encode(), capture_output=True).returncode == 0


def commands(block: str) -> list[Command]:
    found: list[Command] = []
    pending: list[str] = []
    comment = ""
    for line in block.splitlines():
        if not pending and line.startswith("#"):
            if line.startswith("# -> ") and found:
                found[-1].expected = line[len("# -> "):]
            elif not line.startswith("#    "):
                comment += line + "\n"
            continue
        if not pending and not line.strip():
            comment = ""
            continue
        pending.append(line)
        text = "\n".join(pending)
        if complete(text):
            code = text.split("  #")[0].rstrip() if "\n" not in text else text
            blocks = "blocks" in comment or "blocks" in text.split("  #", 1)[-1]
            found.append(Command(code, comment, blocks=blocks, background=code.endswith("&")))
            pending, comment = [], ""
    assert not pending, f"an unfinished command in the README: {pending}"
    return found


# -- the shapes the README shows


class _Ellipsis:
    def __repr__(self) -> str:
        return "..."


ELLIPSIS = _Ellipsis()


class ShapeParser:
    """JSON as the README writes it, with `...` where it leaves things out."""

    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def parse(self) -> Any:
        value = self.value()
        self.space()
        assert self.at == len(self.text), f"trailing text in {self.text!r} at {self.at}"
        return value

    def space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t":
            self.at += 1

    def value(self) -> Any:
        self.space()
        if self.text.startswith("...", self.at):
            self.at += 3
            return ELLIPSIS
        char = self.text[self.at]
        if char in "{[":
            return self.container()
        decoded, end = json.JSONDecoder().raw_decode(self.text, self.at)
        self.at = end
        return decoded

    def container(self) -> Any:
        closing = "}" if self.text[self.at] == "{" else "]"
        self.at += 1
        items: list[Any] = []
        while True:
            self.space()
            if self.text[self.at] == closing:
                self.at += 1
                break
            if closing == "}" and not self.text.startswith("...", self.at):
                key = self.value()
                self.space()
                assert self.text[self.at] == ":", self.text[self.at:]
                self.at += 1
                items.append((key, self.value()))
            else:
                items.append(self.value())
            self.space()
            if self.text[self.at] == ",":
                self.at += 1
        if closing == "]":
            return items
        return {"__more__": any(i is ELLIPSIS for i in items), **{k: v for k, v in (i for i in items if i is not ELLIPSIS)}}


def matches(shown: Any, actual: Any) -> bool:
    if shown is ELLIPSIS:
        return True
    if isinstance(shown, dict):
        keys = {k for k in shown if k != "__more__"}
        if not isinstance(actual, dict) or not keys <= set(actual) or (not shown["__more__"] and keys != set(actual)):
            return False
        return all(matches(shown[k], actual[k]) for k in keys)
    if isinstance(shown, list):
        wanted = [s for s in shown if s is not ELLIPSIS]
        if not isinstance(actual, list) or (len(wanted) == len(shown) and len(actual) != len(shown)):
            return False
        free = list(actual)
        for item in wanted:
            hit = next((a for a in free if matches(item, a)), None)
            if hit is None:
                return False
            free.remove(hit)
        return True
    if isinstance(shown, str) and ULID.fullmatch(shown):
        return isinstance(actual, str) and bool(ULID.fullmatch(actual))
    if isinstance(shown, str) and "..." in shown:
        return isinstance(actual, str) and re.fullmatch(".*".join(map(re.escape, shown.split("..."))), actual, re.S) is not None
    return bool(shown == actual and type(shown) is type(actual))


def check_output(command: Command, output: str) -> None:
    assert command.expected is not None
    if command.expected.startswith(("{", "[")):
        assert matches(ShapeParser(command.expected).parse(), json.loads(output)), (command.text, command.expected, output)
    else:
        pattern = ".*".join(re.escape(piece) for piece in command.expected.split("..."))
        assert re.search(pattern, output, re.S), (command.text, command.expected, output)


def test_the_shape_matcher_refuses_what_the_readme_does_not_show():
    shape = ShapeParser('{"a":"01M88CS2RM2B1CVFWE5N54XNG9","b":[{"c":1,...},...],"d":"x..."}').parse()
    good = {"a": "01M8NY9VKBDR55C1AGA41AA3AD", "b": [{"c": 1, "e": 2}, {"c": 3}], "d": "xyz"}
    assert matches(shape, good)
    for bad in ({**good, "extra": 1}, {**good, "a": "no id"}, {**good, "b": [{"c": 2}]}, {**good, "d": "yx"}, {"a": good["a"]}):
        assert not matches(shape, bad), bad
    assert not matches(ShapeParser('{"status":"accepted"}').parse(), {"status": "queued"})
    assert not matches(ShapeParser("[1,2]").parse(), [1, 2, 3])


def test_the_tour_is_shell_commands_with_outputs_shown():
    found = [c for block in tour_blocks(README.read_text()) for c in commands(block)]
    texts = "\n".join(c.text for c in found)
    assert len(found) >= 14 and sum(c.expected is not None for c in found) >= 9
    assert "8080" not in texts.replace("${HERALD_PORT:-8080}", ""), "the tour names a fixed port"
    for command in found:  # every example that sends a body says it is JSON
        if " -d " in command.text or "--data" in command.text:
            assert "Content-Type: application/json" in command.text, command.text
    assert [c.blocks for c in found][-1] and sum(c.blocks for c in found) == 1, "the one blocking command comes last"


class Shell:
    """One bash reading commands from a pipe, as a terminal the tour is pasted into; each command's output and status."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process, self.stdin, self.stdout = process, process.stdin, process.stdout
        self.buffer = b""
        self.count = 0

    async def run(self, text: str) -> tuple[str, int]:
        self.count += 1
        marker = f"@@end-{self.count}"
        # stdin from /dev/null: a command must not read the rest of the tour as its input
        await self.stdin.send_all(f"{{ {text}\n}} < /dev/null\nprintf '\\n{marker} %s\\n' $?\n".encode())
        pattern = re.compile(rf"\n{marker} (\d+)\n".encode())
        while not (found := pattern.search(self.buffer)):
            chunk = await self.stdout.receive_some()
            assert chunk, f"bash exited: {self.buffer.decode()}"
            self.buffer += chunk
        output, self.buffer = self.buffer[: found.start()], self.buffer[found.end():]
        return output.decode(), int(found.group(1))


def fits(command: Command, output: str) -> bool:
    try:
        check_output(command, output)
    except (AssertionError, ValueError):
        return False
    return True


def test_the_docs_name_no_path_of_the_machine_they_were_written_on():
    for page in [README, ROOT / "loadtests" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for path in ("/work/", "/tmp/", "/root/", "/home/"):
            assert path not in page.read_text(), f"{page.relative_to(ROOT)} names {path}"


@asynccontextmanager
async def readme_node(directory: Path, port: int, **serve_settings: str) -> AsyncIterator[tuple[Shell, ServerProcess]]:
    """`herald serve` as `make run` starts it from `directory` (`.venv/bin/herald serve`, the default data dir) with
    HERALD_PORT=port and `serve_settings`, and one bash there (its stderr in bash-stderr.txt), as the terminal the
    README's commands are pasted into; at the end, the shell's session (and what it left in the background) and the
    node are stopped."""
    wrapper = directory / ".venv" / "bin" / "herald"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m actors.cli "$@"\n')
    wrapper.chmod(0o755)
    env = herald_environment(HERALD_PORT=str(port), HERALD_LOG_LEVEL="WARNING")
    async with serve_process([str(wrapper), "serve"], directory, {**env, **serve_settings}) as node:
        with (directory / "bash-stderr.txt").open("wb") as errors:
            bash = await trio.lowlevel.open_process(
                ["bash"], cwd=str(directory), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, start_new_session=True,
            )
            try:
                yield Shell(bash), node
            finally:
                with trio.move_on_after(5):
                    await bash.stdin.aclose() if bash.stdin else None
                    await bash.wait()
                if bash.returncode is None:
                    os.killpg(bash.pid, 9)  # its session: the shell and what the commands left in the background
                    await bash.wait()


async def test_the_readme_tour_runs_top_to_bottom_on_another_port(tmp_path):
    found = [c for block in tour_blocks(README.read_text()) for c in commands(block)]
    port = free_port()
    assert port != 8080
    outputs: list[str] = []
    async with readme_node(tmp_path, port) as (shell, node):
        assert node.url == f"http://127.0.0.1:{port}"
        for n, command in enumerate(found):
            text = command.text
            if command.background:
                text = f"{text[:-1].rstrip()} > background-{n}.out 2>&1 &"
            elif command.blocks:
                text = f"timeout 3 {text}"
            with trio.fail_after(60):
                output, code = await shell.run(text)
                for _ in range(10 if command.again else 0):
                    if fits(command, output):
                        break
                    await trio.sleep(0.5)
                    output, code = await shell.run(text)
            stderr = (tmp_path / "bash-stderr.txt").read_text()
            assert code == 0 or (command.blocks and code == 124), (command.text, code, output, stderr)
            if command.expected is not None:
                check_output(command, output)
            outputs.append(output)
    nid = next(json.loads(outputs[n])["notification_id"] for n, c in enumerate(found) if c.text.startswith('echo "$RECEIPT"'))
    listener = next((tmp_path / f"background-{n}.out").read_text() for n, c in enumerate(found) if c.background)
    frames = [json.loads(line) for line in listener.splitlines() if line.startswith("{")]
    assert any(f.get("type") == "notification" and f.get("id") == nid for f in frames), listener
