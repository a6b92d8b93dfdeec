"""Start `herald serve` as a real process: on a free loopback port (port 0), or as a user does, from a directory.

`herald_process` runs this checkout's node on port 0 with a data dir of the test's;
`serve_process` runs any `herald serve` command line in a directory and environment of
the test's (tests/cli/test_first_contact.py, the README tests in tests/e2e/), with
`herald_environment` for an environment free of the caller's HERALD_* settings.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Mapping, Sequence

import trio

ROOT = Path(__file__).resolve().parent.parent
HERALD = [sys.executable, "-m", "actors.cli"]  # the `herald` command of this checkout


def herald_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any HERALD_* setting of its own, with Herald importable, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return {**env, "PYTHONPATH": str(ROOT), **settings}


@dataclass
class ServerProcess:
    process: trio.Process
    data_dir: Path
    url: str = ""
    api_key: str = ""
    key_file: Path | None = None  # where the node said its API key is
    output: list[str] = field(default_factory=list)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)


async def _read_lines(stream: trio.abc.ReceiveStream, sink: list[str], ready: trio.Event, server: ServerProcess) -> None:
    """Collect the server's output; `ready` once it named its API key file (or its output ended)."""
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace")
            sink.append(line)
            match = re.match(r"herald: serving on (\S+)", line)
            if match:
                server.url = match.group(1)
            match = re.match(r"herald: API key in (\S+)", line)
            if match:
                server.key_file = Path(match.group(1))
                server.api_key = server.key_file.read_text().strip()
                ready.set()
    ready.set()


@asynccontextmanager
async def serve_process(command: Sequence[str], cwd: Path, env: Mapping[str, str], data_dir: Path | None = None,
                        ) -> AsyncIterator[ServerProcess]:
    """A `herald serve` started by `command` in `cwd` with exactly the environment `env`, once it is serving (its
    URL and API key read from what it printed; its data dir that of the key file unless given); SIGTERM (then
    SIGKILL after 15 s) on exit unless it is already dead."""
    process = await trio.lowlevel.open_process(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env), cwd=str(cwd))
    server = ServerProcess(process, data_dir or Path())
    ready = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(_read_lines, process.stdout, server.output, ready, server)
            with trio.move_on_after(30):
                await ready.wait()
            if server.key_file is None:
                raise AssertionError("herald serve did not start:\n" + "\n".join(server.output))
            if data_dir is None:
                server.data_dir = server.key_file.parent
            try:
                yield server
            finally:
                if process.returncode is None:
                    process.terminate()
                    with trio.move_on_after(15):
                        await process.wait()
                    if process.returncode is None:
                        process.kill()
                await process.wait()
                nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()


@asynccontextmanager
async def herald_process(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> AsyncIterator[ServerProcess]:
    """A `herald serve` child process on a free port with this data dir (serve_process)."""
    command = [*HERALD, "serve", "--port", "0", "--data-dir", str(data_dir), *extra]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HERALD_LOG_LEVEL": "WARNING", **(env or {})}
    async with serve_process(command, ROOT, environment, data_dir) as server:
        yield server
