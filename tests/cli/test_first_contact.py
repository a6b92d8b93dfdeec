"""What a new user meets first, with real `herald` processes: the CLI finds the node it started, start-up errors are one line.

Each test runs `herald serve` from a fresh directory (the data dir is the default
`herald-data` there, as with `make run`) on a free port given as HERALD_PORT, and the
client commands from the same directory and environment, without --server or --api-key.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest
import trio

from tests.process import HERALD, herald_environment, serve_process
from tests.servers import free_port

pytestmark = pytest.mark.slow

async def herald(cwd: Path, env: dict[str, str], *args: str, seconds: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run a `herald` command to its end (bounded), capturing stdout and stderr."""
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    with trio.fail_after(seconds):
        return await trio.run_process([*HERALD, *args], cwd=str(cwd), env=env, capture_stdout=True, capture_stderr=True, check=False)


@asynccontextmanager
async def serving(cwd: Path, env: dict[str, str], *args: str) -> AsyncIterator[str]:
    """`herald serve` in `cwd` until the block ends; yields the URL it printed."""
    await trio.Path(cwd).mkdir(parents=True, exist_ok=True)
    async with serve_process([*HERALD, "serve", *args], cwd, env) as server:
        yield server.url


async def test_send_and_listen_reach_the_node_started_here_on_any_port(tmp_path):
    port = free_port()
    env = herald_environment(HERALD_PORT=str(port), HERALD_LOG_LEVEL="WARNING")
    async with serving(tmp_path, env) as url:
        assert url == f"http://127.0.0.1:{port}"
        async with trio.open_nursery() as nursery:
            listened: list[subprocess.CompletedProcess[bytes]] = []

            async def listen() -> None:
                listened.append(await herald(tmp_path, env, "listen", "--user", "alice", "--count", "1"))

            nursery.start_soon(listen)
            await trio.sleep(1)  # not a timing assertion: the listener syncs first, and replays what it missed anyway
            sent = await herald(tmp_path, env, "send", "--user", "alice", "--title", "Hello from the CLI")
            assert sent.returncode == 0, sent.stderr.decode()
            nid = json.loads(sent.stdout)["notification_id"]
        frames = [json.loads(line) for line in listened[0].stdout.decode().splitlines()]
        assert listened[0].returncode == 0, listened[0].stderr.decode()
        assert any(f.get("type") == "notification" and f["id"] == nid and f["title"] == "Hello from the CLI" for f in frames), frames
        circuits = await herald(tmp_path, env, "circuits")
        assert circuits.returncode == 0 and len(json.loads(circuits.stdout)["circuits"]) == 5


async def test_the_cli_reads_the_config_file_serve_reads(tmp_path):
    port = free_port()
    config = tmp_path / "herald.toml"
    config.write_text(f'[herald]\nport = {port}\ndata_dir = "{tmp_path / "elsewhere"}"\nlog_level = "WARNING"\n')
    env = herald_environment()
    async with serving(tmp_path / "serve", env, "--config", str(config)) as url:
        assert url.endswith(f":{port}")
        for client_env, args in ((env, ["--config", str(config)]), (herald_environment(HERALD_CONFIG=str(config)), [])):
            sent = await herald(tmp_path / "client", client_env, "send", "--user", "bob", "--title", "hi", *args)
            assert sent.returncode == 0, sent.stderr.decode()
            assert json.loads(sent.stdout)["status"] == "accepted"


async def test_server_and_api_key_name_another_node(tmp_path):
    near, far = tmp_path / "near", tmp_path / "far"
    near_env = herald_environment(HERALD_PORT=str(free_port()), HERALD_LOG_LEVEL="WARNING")
    far_env = herald_environment(HERALD_PORT=str(free_port()), HERALD_LOG_LEVEL="WARNING")
    async with serving(near, near_env) as near_url, serving(far, far_env) as far_url:
        far_key = (far / "herald-data" / "api-key").read_text().strip()
        near_key = (near / "herald-data" / "api-key").read_text().strip()
        for env, args in (
            (near_env, ["--server", far_url, "--api-key", far_key]),
            ({**near_env, "HERALD_URL": far_url, "HERALD_API_KEY": far_key}, []),
        ):
            sent = await herald(near, env, "send", "--user", "carol", "--title", "far away", *args)
            assert sent.returncode == 0, sent.stderr.decode()
            nid = json.loads(sent.stdout)["notification_id"]
            async with httpx.AsyncClient(timeout=10) as client:
                at_far = await client.get(f"{far_url}/v1/notifications/{nid}", headers={"Authorization": f"Bearer {far_key}"})
                at_near = await client.get(f"{near_url}/v1/notifications/{nid}", headers={"Authorization": f"Bearer {near_key}"})
            assert at_far.status_code == 200 and at_near.status_code == 404, (at_far.text, at_near.text)
        # the near node's key is not the far node's: --server alone takes the local key, and the far node says 401
        refused = await herald(near, near_env, "send", "--user", "carol", "--title", "x", "--server", far_url)
        assert refused.returncode == 1 and json.loads(refused.stdout)["status"] == 401


async def test_a_node_that_is_not_there_is_one_line(tmp_path):
    env = herald_environment(HERALD_PORT=str(free_port()))
    (tmp_path / "herald-data").mkdir()
    (tmp_path / "herald-data" / "api-key").write_text("k\n")
    result = await herald(tmp_path, env, "send", "--user", "alice", "--title", "x")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr.decode()
    assert f"127.0.0.1:{env['HERALD_PORT']}" in lines[0] and "HERALD_PORT" in lines[0]
    no_key = await herald(tmp_path / "herald-data", env, "send", "--user", "alice", "--title", "x")
    assert no_key.returncode == 1 and len(no_key.stderr.splitlines()) == 1 and b"api-key" in no_key.stderr


# -- start-up errors: one line on stderr, a non-zero exit


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode().splitlines()
    assert result.returncode != 0, result
    assert len(lines) == 1, result.stderr.decode()
    assert lines[0].startswith("herald: ") and "Traceback" not in lines[0]
    return lines[0]


async def test_a_port_already_taken_is_one_line_naming_the_address_and_herald_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await herald(tmp_path, herald_environment(HERALD_PORT=str(port)), "serve")
    line = one_line(result)
    assert f"127.0.0.1:{port}" in line and "already in use" in line and "HERALD_PORT" in line
    assert result.stdout == b""


async def test_a_data_dir_that_cannot_be_used_is_one_line_naming_it_and_herald_data_dir(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "broken" / "store.sqlite3").mkdir(parents=True)  # a database that cannot be opened
    for data_dir in (tmp_path / "a-file" / "data", tmp_path / "broken"):
        result = await herald(tmp_path, herald_environment(HERALD_PORT="0", HERALD_DATA_DIR=str(data_dir)), "serve")
        line = one_line(result)
        assert str(data_dir) in line and "HERALD_DATA_DIR" in line, line


async def test_a_bad_config_file_or_value_is_one_line_naming_the_file_and_the_key(tmp_path):
    bad_toml = tmp_path / "syntax.toml"
    bad_toml.write_text("[herald]\nport = \n")
    bad_value = tmp_path / "value.toml"
    bad_value.write_text('[herald]\nport = "eighty"\n')
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[herald]\nprot = 9000\n")
    backend = tmp_path / "backend.toml"
    backend.write_text('[herald]\nstore = "embedded:///elsewhere"\n')  # the embedded backends' files are in the data dir
    cases = [
        (["serve", "--config", str(bad_toml)], {}, [str(bad_toml), "TOML", "line 2"]),
        (["serve"], {"HERALD_CONFIG": str(bad_value)}, [str(bad_value), "port", "eighty"]),
        (["serve", "--config", str(unknown)], {}, [str(unknown), "prot"]),
        (["serve", "--config", str(tmp_path / "missing.toml")], {}, ["missing.toml"]),
        (["serve"], {"HERALD_PORT": "９０００"}, ["HERALD_PORT", "９０００"]),
        (["serve"], {"HERALD_MAX_ATTEMPTS": "0"}, ["HERALD_MAX_ATTEMPTS"]),
        (["serve"], {"HERALD_LOG_LEVEL": "loud"}, ["HERALD_LOG_LEVEL", "loud"]),
        (["serve"], {"HERALD_BUS": "nats://localhost:4222"}, ["HERALD_BUS", "nats://", "embedded://", "kafka://"]),
        (["serve"], {"HERALD_BUS": f"kafka://127.0.0.1:{free_port()}", "HERALD_PORT": "0"}, ["Kafka at 127.0.0.1", "cannot be reached"]),
        (["serve", "--config", str(backend)], {}, [str(backend), "store", "embedded:///elsewhere"]),
        (["serve", "--role", "everything"], {}, ["role", "everything", "all, api, worker, edge"]),
        (["send", "--user", "a", "--title", "t", "--config", str(bad_value)], {}, [str(bad_value), "port"]),
    ]
    for args, settings, named in cases:
        line = one_line(await herald(tmp_path, herald_environment(**settings), *args))
        assert all(word in line for word in named), (args, settings, line)


async def test_a_role_other_than_all_is_refused_with_the_embedded_backends_in_one_line(tmp_path):
    for args, settings in ((["serve", "--role", "api"], {}), (["serve"], {"HERALD_ROLE": "worker"}), (["serve", "--role", "edge"], {})):
        result = await herald(tmp_path, herald_environment(HERALD_PORT="0", **settings), *args)
        line = one_line(result)
        assert result.returncode == 2 and "distributed backends" in line and "only the role 'all' runs" in line, (args, line)
    assert not (tmp_path / "herald-data").exists()  # refused before anything was made


async def test_a_second_node_on_the_same_data_dir_is_one_line_and_the_first_keeps_serving(tmp_path):
    env = herald_environment(HERALD_PORT="0", HERALD_LOG_LEVEL="WARNING")
    async with serving(tmp_path, env, "--role", "all") as url:
        data_dir = (tmp_path / "herald-data").resolve()
        key = (data_dir / "api-key").read_text().strip()
        before = {p.name: p.read_bytes() for p in (data_dir / "api-key", data_dir / "keys.sqlite3")}
        second = await herald(tmp_path, env, "serve")  # the same directory: the same default data dir
        line = one_line(second)
        assert f"{data_dir} is in use by another Herald (pid " in line and "HERALD_DATA_DIR" in line, line
        assert second.stdout == b""
        assert {p.name: p.read_bytes() for p in (data_dir / "api-key", data_dir / "keys.sqlite3")} == before
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
            sent = await client.post("/v1/notifications", json={"user_id": "u", "channels": ["web"], "content": {"web": {"title": "t"}}})
            assert sent.status_code == 202, sent.text
            with trio.fail_after(10):
                while (await client.get(f"/v1/notifications/{sent.json()['notification_id']}")).json()["channels"]["web"]["status"] != "sent":
                    await trio.sleep(0.05)


async def test_a_missing_dependency_is_one_line_naming_the_package(tmp_path):
    # -S: no site-packages, as in an environment where Herald's dependencies were never installed
    for args in (["serve", "--port", "0"], ["send", "--user", "a", "--title", "t"]):
        result = await trio.run_process(
            [sys.executable, "-S", "-m", "actors.cli", *args], cwd=str(tmp_path), env=herald_environment(),
            capture_stdout=True, capture_stderr=True, check=False,
        )
        line = one_line(result)
        assert "required package is missing" in line and "make run" in line, line
