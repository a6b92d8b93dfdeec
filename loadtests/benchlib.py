"""What the benchmark scripts share: percentiles, the result line, CPU of a process, stopping a server, a raw HTTP client.

Nothing here imports Herald's packages: the scripts' client processes import it too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
MARK = "BENCHJSON "
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def emit(result: dict[str, Any]) -> None:
    """A client process's result: one marked JSON line on stdout."""
    print(MARK + json.dumps(result), flush=True)


def parse_emitted(text: str) -> dict[str, Any]:
    for line in text.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK) :]))
    raise RuntimeError(f"no result line in the output:\n{text[-2000:]}")


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat; steal counts as busy)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stop_process(name: str, proc: subprocess.Popen[bytes] | None, deadline_s: float = 20.0) -> str:
    """SIGTERM, wait up to `deadline_s`, then SIGKILL; a line saying which it took."""
    if proc is None or proc.poll() is not None:
        return f"{name}: already exited ({None if proc is None else proc.returncode})"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=deadline_s)
        return f"{name}: stopped on SIGTERM (exit {code})"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return f"{name}: did not stop within {deadline_s}s of SIGTERM: SIGKILLed"


class RawHttp:
    """One keep-alive HTTP/1.1 connection (trio); requests one at a time; reconnects after `Connection: close`.

    Much lighter than httpx, so the client side is not the limit."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.auth = f"Bearer {key}".encode()
        self.stream: Any = None
        self.buffer = bytearray()

    async def request(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        import trio

        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer.clear()
        head = (
            f"{method} {target} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nauthorization: "
        ).encode()
        await self.stream.send_all(head + self.auth + b"\r\n\r\n" + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._more()
        header_block = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        lines = header_block.split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._more()
        payload = bytes(self.buffer[:length])
        del self.buffer[:length]
        if "close" in headers.get("connection", "").lower():
            await self.stream.aclose()
            self.stream = None
        return status, payload

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buffer += data

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


def check_limits(parser: Any, limits: list[tuple[bool, str]]) -> None:
    """Refuse the command line (argparse's error, exit 2) at the first limit that does not hold."""
    for good, message in limits:
        if not good:
            parser.error(message)
