"""The real servers the suite starts itself answer on their free loopback ports."""

import socket
import struct
import subprocess

from tests.servers import _pg_bin, postgres_server, redis_server, tansu_broker


def test_redis_server_answers_ping(tmp_path):
    with redis_server(tmp_path) as redis, socket.create_connection((redis.host, redis.port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"


def test_postgres_answers_a_query():
    with postgres_server() as pg:
        out = subprocess.run([_pg_bin("psql"), pg.url, "-tAc", "select 40 + 2"], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip() == "42", out.stderr


def test_tansu_answers_a_kafka_api_versions_request():
    with tansu_broker() as broker, socket.create_connection((broker.host, broker.port), timeout=5) as sock:
        client_id = b"herald-test"
        # ApiVersions (key 18) v0: request header v1 = api_key, api_version, correlation_id, client_id
        body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", sock.recv(4))[0]
        payload = b""
        while len(payload) < size:
            payload += sock.recv(size - len(payload))
        correlation_id, error_code = struct.unpack(">ih", payload[:6])
        assert (correlation_id, error_code) == (7, 0)


def test_cassandra_not_installed_says_how_to_install_it(tmp_path, monkeypatch):
    import pytest

    import tests.servers as servers

    monkeypatch.setattr(servers, "ENGINES", tmp_path / "no-engines")
    with pytest.raises(RuntimeError, match="scripts/install-engines.sh cassandra"), servers.cassandra_server(tmp_path / "node"):
        pass


def test_cassandra_ready_means_it_answers_cql_not_only_listens():
    """_cql_ready asks the native transport for OPTIONS; a port that only accepts (or is closed) is not ready."""
    from tests.servers import _cql_ready, free_port

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(5)
        assert not _cql_ready(listener.getsockname()[1])  # accepted by the kernel, never answered: not ready (1 s timeout)
    assert not _cql_ready(free_port())
