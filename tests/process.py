"""Start `herald serve` as a real process on a free loopback port (port 0)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator

import trio

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServerProcess:
    process: trio.Process
    data_dir: Path
    url: str = ""
    api_key: str = ""
    output: list[str] = field(default_factory=list)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)


async def _read_lines(stream: trio.abc.ReceiveStream, sink: list[str], ready: trio.Event, server: ServerProcess) -> None:
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
                server.api_key = (await trio.Path(match.group(1)).read_text()).strip()
                ready.set()


@asynccontextmanager
async def herald_process(data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> AsyncIterator[ServerProcess]:
    """A `herald serve` child process; SIGTERM (then SIGKILL after 15 s) on exit unless it is already dead."""
    command = [sys.executable, "-m", "actors.cli", "serve", "--port", "0", "--data-dir", str(data_dir), *extra]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HERALD_LOG_LEVEL": "WARNING", **(env or {})}
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment, cwd=str(ROOT))
    server = ServerProcess(process, data_dir)
    ready = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            assert process.stdout is not None
            nursery.start_soon(_read_lines, process.stdout, server.output, ready, server)
            with trio.move_on_after(30):
                await ready.wait()
            if not ready.is_set():
                raise AssertionError("herald serve did not start:\n" + "\n".join(server.output))
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
