"""Worker throughput: deliveries per second through consumer -> provider -> recorder, per worker core and per process.

Each measurement runs in a process of its own (`--child`): it starts the node in-process
(`run_herald`, role all, a fresh data directory, no HTTP traffic), produces N deliveries
straight onto its bus in batches of 500 (the CPU of the produce calls is subtracted), and
times from the moment the node is ready until every partition's committed offset
reaches its end (a record is committed only after its outcome is recorded). The sandbox
scenario first warms up past each partition's first window (1.3 x consumer_window records
per partition, not measured): a node's first window after a start is maybe-sent, a send
ledger read per record, which is a restart's cost, not the steady state's. Figures:
deliveries/s of wall time, and deliveries per CPU second of the process (user + system,
all its threads: `time.process_time`), i.e. per worker core.

The providers' rate limits are lifted (capacity and refill 1,000,000/s for every channel:
the defaults, SMS 100/s and email 1,000/min, would be what is measured); the gate still
runs (its bucket and breaker through the State), as do the send ledger, the call log and
the Recorder.

Scenarios:
* sandbox: SMS, push and web deliveries (a third each) with the sandbox clients;
* email: email deliveries to the `.eml` outbox;
* emulator: SMS and push deliveries through a channel client that POSTs each to a local
  HTTP provider emulator answering after `--delay-ms` (100 ms): a tiny Trio HTTP/1.1 server
  this script starts as a process of its own (its CPU is not the worker's).
* twilio: SMS deliveries through the real Twilio client (actors/clients/twilio.py: its
  HTTP/1.1 pool, actors/clients/http1.py; its form body, Basic auth, its verdicts) to the same emulator, with max_connections =
  provider_max_in_flight (on the reference too if its tree has the Twilio client).
* fcm, apns: push deliveries (one device token each) through the real FCM / APNs clients
  (actors/clients/fcm.py, apns.py over the HTTP/2 client, actors/clients/http2.py: their
  messages, their OAuth2 access token or ES256 provider token, their verdicts) to an HTTP/2
  emulator over TLS (ALPN h2, a throwaway CA this script makes, trusted through the clients'
  ca_file) answering every send after `--delay-ms`: a lean server on the h2 library over Trio
  sockets in a process of its own, which also serves FCM's token endpoint (APNs's provider
  token is made locally). It allows EMULATOR_STREAMS streams per connection, as Google's
  front ends do; the clients get max_connections = provider_max_in_flight / that (rounded up),
  so the cap on requests in flight is provider_max_in_flight, as in the twilio scenario.
  Skipped on a reference tree without actors/clients/http2.py.

The emulator's own CPU per request (user + system of its process, from /proc, over the
measured child run) is printed beside every served scenario: it must stay well below the
worker's, or the emulator is what is measured.

Every scenario runs on this tree and on a reference tree (by default a `git archive` of
539ca1b, before concurrent providers, extracted to /tmp), in the same run; the ratio is
printed beside each figure. The reference gets fewer deliveries where it is slow (the same
per-second figure, a shorter run).

    .venv/bin/python loadtests/worker_bench.py                      # all scenarios, ~1-2 min
    .venv/bin/python loadtests/worker_bench.py --scenarios emulator --count 20000
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_COMMIT = "539ca1b"
CHANNELS = {"sandbox": ("sms", "push", "web"), "email": ("email",), "emulator": ("sms", "push"), "twilio": ("sms",),
            "fcm": ("push",), "apns": ("push",)}
SERVED = ("emulator", "twilio", "fcm", "apns")  # the scenarios that talk to an emulator process
PUSHED = ("fcm", "apns")  # ... the HTTP/2 one over TLS
EMULATOR_STREAMS = 100  # SETTINGS_MAX_CONCURRENT_STREAMS of the HTTP/2 emulator (Google's front ends say 100)
APNS_TOKEN = "ab" * 32  # a device token as APNs has them (hex)


# -- the provider emulator (a process of its own) ----------------------------------------


RESPONSE = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'


async def serve_emulator(delay_s: float) -> None:
    """Answer every POST after delay_s with 200, on keep-alive connections; prints its port."""

    async def handle(stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = content_length(head)
                while len(buffer) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                await trio.sleep(delay_s)
                await stream.send_all(RESPONSE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(handle, listeners)


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def serve_h2_emulator(delay_s: float, tls_dir: Path) -> None:
    """FCM's and APNs's APIs, as far as the bench needs: HTTP/2 over TLS (ALPN h2), every request answered 200 after
    delay_s (`/token`: an OAuth2 access token; `/3/device/...`: APNs's empty 200 with an apns-id; else FCM's message
    name); prints its port. Lean on purpose: h2's server side without header validation or Huffman coding, one task
    reading each connection and one answering its requests in the order they came (the delay is the same for all)."""
    import collections
    import ssl

    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    import hpack

    class Encoder(hpack.Encoder):
        def encode(self, headers: Any, huffman: bool = True) -> bytes:
            return super().encode(headers, huffman=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls_dir / "server.pem"), str(tls_dir / "server.key"))
    context.set_alpn_protocols(["h2"])
    config = h2.config.H2Configuration(client_side=False, header_encoding=None, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False,
                                       normalize_inbound_headers=False)
    token = [(b":status", b"200"), (b"content-type", b"application/json")]
    token_body = b'{"access_token":"bench-access-token","expires_in":3600,"token_type":"Bearer"}'
    fcm_head = [(b":status", b"200"), (b"content-type", b"application/json")]
    served = 0

    async def handle(tcp: trio.SocketStream) -> None:
        nonlocal served
        stream = trio.SSLStream(tcp, context, server_side=True)
        conn = h2.connection.H2Connection(config)
        conn.encoder = Encoder()
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: EMULATOR_STREAMS})
        conn.initiate_connection()
        conn.increment_flow_control_window(16 * 1024 * 1024)
        paths: dict[int, bytes] = {}
        pending: collections.deque[tuple[float, int]] = collections.deque()  # (when to answer, stream id)
        arrived = [trio.Event()]
        sending = trio.Lock()

        async def flush() -> None:
            async with sending:
                data = conn.data_to_send()
                if data:
                    await stream.send_all(data)

        def answer(stream_id: int) -> None:
            nonlocal served
            path = paths.pop(stream_id, None)
            if path is None:  # reset by the client meanwhile
                return
            served += 1
            try:
                if path.startswith(b"/3/device/"):
                    # apns-id is new in every answer: kept out of hpack's table (indexing it would churn both sides' tables)
                    conn.send_headers(stream_id, [(b":status", b"200"), hpack.NeverIndexedHeaderTuple(b"apns-id", b"%d" % served)],
                                      end_stream=True)
                elif path == b"/token":
                    conn.send_headers(stream_id, token)
                    conn.send_data(stream_id, token_body, end_stream=True)
                else:
                    conn.send_headers(stream_id, fcm_head)
                    conn.send_data(stream_id, b'{"name":"projects/bench/messages/%d"}' % served, end_stream=True)
            except h2.exceptions.StreamClosedError:
                pass

        async def answering() -> None:
            while True:
                while not pending:
                    arrived[0] = trio.Event()
                    await arrived[0].wait()
                await trio.sleep_until(pending[0][0])
                now = trio.current_time()
                while pending and pending[0][0] <= now:
                    answer(pending.popleft()[1])
                await flush()

        async def reading() -> None:
            await flush()
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        paths[event.stream_id] = dict(event.headers).get(b":path", b"/")
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        pending.append((trio.current_time() + delay_s, event.stream_id))
                        arrived[0].set()
                    elif isinstance(event, h2.events.StreamReset):
                        paths.pop(event.stream_id, None)
                await flush()

        async def until_broken(part: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
            try:
                await part()
            except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError, h2.exceptions.ProtocolError):
                pass
            finally:
                scope.cancel()  # the connection is done: the other part too

        try:
            with trio.move_on_after(30):
                await stream.do_handshake()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(until_broken, answering, nursery.cancel_scope)
                nursery.start_soon(until_broken, reading, nursery.cancel_scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
    print(listeners[0].socket.getsockname()[1], flush=True)
    await trio.serve_listeners(handle, listeners)


def make_tls(directory: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 (server.pem, server.key) under `directory`; the CA file's path."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    return directory / "ca.pem"


def push_client(scenario: str, port: int, ca_file: Path, max_in_flight: int) -> Any:
    """The real FCM or APNs client, to the HTTP/2 emulator (a fresh key of each kind: FCM's RS256, APNs's ES256)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from actors.clients.provider_config import ApnsProvider, FcmProvider, Secret

    base = f"https://127.0.0.1:{port}"
    connections = -(-max_in_flight // EMULATOR_STREAMS)
    pem = serialization.PrivateFormat.PKCS8
    if scenario == "fcm":
        from actors.clients.fcm import FcmClient

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        text = key.private_bytes(serialization.Encoding.PEM, pem, serialization.NoEncryption()).decode()
        return FcmClient(FcmProvider(client_email="bench@bench.iam.gserviceaccount.com", private_key=Secret(text),
                                     project_id="bench", private_key_id="k1", token_url=f"{base}/token", base_url=base,
                                     max_connections=connections, ca_file=ca_file))
    from actors.clients.apns import ApnsClient

    key = ec.generate_private_key(ec.SECP256R1())
    text = key.private_bytes(serialization.Encoding.PEM, pem, serialization.NoEncryption()).decode()
    return ApnsClient(ApnsProvider(key=Secret(text), key_id="KEY0123456", team_id="TEAM012345", topic="org.example.bench",
                                   base_url=base, max_connections=connections, ca_file=ca_file))


class Counted:
    """A channel client whose verdicts are counted by kind (a run of failures fast is no throughput)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.outcomes: dict[str, int] = {}

    async def send(self, delivery: Any) -> Any:
        outcome = await self.client.send(delivery)
        kind = type(outcome).__name__
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
        return outcome

    async def aclose(self) -> None:
        if hasattr(self.client, "aclose"):
            await self.client.aclose()


def cpu_of(pid: int) -> float:
    """A process's CPU seconds so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EmulatorClient:
    """A ChannelClient (actors/provider.py) that POSTs each delivery to the emulator over pooled keep-alive connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[trio.SocketStream] = []
        self.opened = 0

    async def send(self, delivery: Any) -> Any:
        from protocol.messages import RetryLater, Sent

        stream = self.idle.pop() if self.idle else await self._open()
        body = json.dumps({"to": delivery.address, "id": delivery.notification_id}).encode()
        try:
            await stream.send_all(b"POST /v1/messages HTTP/1.1\r\nHost: emulator\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(65536)
                if not data:
                    raise OSError("the emulator closed the connection")
                buffer += data
            head, _, rest = buffer.partition(b"\r\n\r\n")
            length = content_length(head)
            while len(rest) < length:
                data = await stream.receive_some(65536)
                if not data:
                    raise OSError("the emulator closed the connection")
                rest += data
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self.idle.append(stream)
        return Sent() if head.startswith(b"HTTP/1.1 200") else RetryLater(head.split(b"\r\n")[0].decode())

    async def _open(self) -> trio.SocketStream:
        self.opened += 1
        return await trio.open_tcp_stream("127.0.0.1", self.port)


# -- one measurement (a process of its own) ----------------------------------------------


def deliveries(scenario: str, count: int, tag: str = "B") -> list[Any]:
    from protocol.channels import Channel
    from protocol.content import Content, EmailContent, PushContent, SmsContent, WebContent
    from protocol.messages import Delivery

    content = {
        "sms": (Content(sms=SmsContent("Code 1234")), "+15555550100"),
        "push": (Content(push=PushContent("Code", "1234", {"k": "v"})), "tok-1"),
        "web": (Content(web=WebContent("Code", "1234", "https://example.invalid/x")), None),
        "email": (Content(email=EmailContent("Your code", "Code 1234", "<p>Code <b>1234</b></p>")), None),
    }
    if scenario == "apns":
        content["push"] = (content["push"][0], APNS_TOKEN)
    out = []
    channels = CHANNELS[scenario]
    now = int(time.time() * 1000)
    for i in range(count):
        channel = channels[i % len(channels)]
        body, address = content[channel]
        user = f"u{i % 5000}"
        out.append(Delivery(f"01J{tag}ENCH{i:018d}", user, Channel(channel), now, body,
                            address=address if channel != "email" else f"{user}@example.org"))
    return out


def ledger_in_memory() -> None:
    """Diagnostic only (--ledger memory): the send ledger's writes go to a dict, not to SQLite; NOT durable. Shows
    what the rest of the pipeline does with one durable ledger commit per send out of the way."""
    from reactor.backends.embedded import SqliteStore

    sent: dict[tuple[str, str], str] = {}

    async def mark_sent(self: Any, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        sent.setdefault((notification_id, channel), status)

    async def sent_status(self: Any, notification_id: str, channel: str) -> str | None:
        return sent.get((notification_id, channel))

    async def mark_sent_many(self: Any, marks: Any) -> None:
        for notification_id, channel, status, _ in marks:
            sent.setdefault((notification_id, channel), status)

    SqliteStore.mark_sent = mark_sent  # type: ignore[method-assign]
    SqliteStore.mark_sent_many = mark_sent_many  # type: ignore[attr-defined]  # (a reference tree may not have it)
    SqliteStore.sent_status = sent_status  # type: ignore[method-assign]


class TaskSteps(trio.abc.Instrument):
    """--steps: Trio task steps (a turn of the scheduler each) taken while measuring; a figure of the event loop's
    work that other processes' load does not move (CPU seconds on a shared machine do)."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        return None


def serving_gc() -> str:
    """The garbage collector's policy `herald serve` applies once the node is up (reactor/gc_policy.py: boot objects
    frozen, young collections 10x rarer), so the node is measured as it serves; "none" on a tree without it."""
    try:
        from reactor.gc_policy import SERVING_THRESHOLDS, tune_for_serving
    except ImportError:
        return "none"
    tune_for_serving()
    return ",".join(map(str, SERVING_THRESHOLDS))


async def measure(scenario: str, count: int, emulator_port: int | None, max_in_flight: int | None,
                  count_steps: bool = False, gc_tuned: bool = True, ca_file: Path | None = None) -> dict[str, Any]:
    from actors.app import run_herald
    from actors.config import Config, load_config
    from protocol.channels import Channel
    from protocol.messages import encode_delivery

    data = Path(tempfile.mkdtemp(prefix="herald-worker-bench-"))
    settings: dict[str, Any] = {"data_dir": data, "port": 0, "api_key": "bench-key-0123456789", "log_level": "WARNING"}
    # The providers' own rate limits (SMS 100/s, email 1,000/min by default) would be what is measured: lifted.
    settings["limits"] = {c.value: {"capacity": 1e6, "refill_per_s": 1e6} for c in Channel}
    concurrent = "provider_max_in_flight" in Config.__dataclass_fields__
    if concurrent and max_in_flight is not None:
        settings["provider_max_in_flight"] = {c.value: max_in_flight for c in Channel}
    config = load_config(env={}, **settings)
    items = deliveries(scenario, count)
    values = [(d.channel.topic(), d.user_id.encode(), encode_delivery(d)) for d in items]
    window = int(getattr(config, "consumer_window", config.consumer_batch))
    warmup = scenario == "sandbox"
    warm = deliveries(scenario, int(1.3 * window * sum(config.partitions_of(Channel(c)) for c in CHANNELS[scenario])), "W")
    warmup_values = [(d.channel.topic(), d.user_id.encode(), encode_delivery(d)) for d in warm]
    clients: dict[Channel, Any] | None = None
    if scenario == "twilio" and emulator_port is not None:
        from actors.clients.provider_config import Secret, TwilioProvider
        from actors.clients.twilio import TwilioClient

        connections = config.max_in_flight_of(Channel.SMS)
        clients = {Channel.SMS: TwilioClient(TwilioProvider(
            account_sid="AC" + "0" * 32, auth_token=Secret("bench"), from_number="+15005550006",
            base_url=f"http://127.0.0.1:{emulator_port}", max_connections=connections))}
    elif scenario in PUSHED and emulator_port is not None:
        assert ca_file is not None
        clients = {Channel.PUSH: push_client(scenario, emulator_port, ca_file, config.max_in_flight_of(Channel.PUSH))}
    elif emulator_port is not None:
        clients = {Channel(c): EmulatorClient(emulator_port) for c in CHANNELS[scenario]}
    if clients is not None:
        clients = {channel: Counted(client) for channel, client in clients.items()}
    topics = {Channel(c).topic(): Channel(c) for c in CHANNELS[scenario]}
    async with trio.open_nursery() as nursery:
        herald = await nursery.start(lambda task_status: run_herald(config, clients=clients, signals=False, task_status=task_status))
        gc_policy = serving_gc() if gc_tuned else "default"
        bus = herald.bus

        async def committed() -> int:
            total = 0
            for topic, channel in topics.items():
                for partition in range(config.partitions_of(channel)):
                    total += await bus.committed(f"herald-{channel.value}", topic, partition)
            return total

        if warmup:
            # A node's first window of each partition after a start is maybe-sent (a send ledger read per record): a
            # restart's cost, not the steady state's. Warm up past it, then measure.
            await bus.produce(warmup_values)
            with trio.move_on_after(300):
                while await committed() < len(warmup_values):
                    await trio.sleep(0.05)
        steps = TaskSteps()
        if count_steps:
            trio.lowlevel.add_instrument(steps)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        base = await committed()
        concluded = getattr(herald.metrics, "outcomes", None) if hasattr(herald, "metrics") else None  # the consumers' counts
        concluded_before = {c: dict(o) for c, o in concluded.items()} if concluded else None
        # Produced while the node runs (a node with records from before its start takes them as maybe-sent: a
        # restart's figure, not the steady state's); the CPU the produce calls take is not counted.
        producing = 0.0
        for start in range(0, len(values), 500):
            before = time.process_time()
            await bus.produce(values[start:start + 500])
            producing += time.process_time() - before
        done = base
        with trio.move_on_after(600):
            while done < base + count:
                await trio.sleep(0.02)
                done = await committed()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0 - producing
        if count_steps:
            trio.lowlevel.remove_instrument(steps)
        herald.system.request_shutdown()
    shutil.rmtree(data, ignore_errors=True)
    measured = done - base
    verdicts = None  # what the consumers concluded for the measured deliveries (the tree's counts, where it has them)
    if concluded and concluded_before is not None:
        verdicts = {}
        for channel, counts in concluded.items():
            for outcome, n in counts.items():
                moved = n - concluded_before.get(channel, {}).get(outcome, 0)
                if moved:
                    verdicts[outcome] = verdicts.get(outcome, 0) + moved
    return {"scenario": scenario, "deliveries": measured, "complete": done >= base + count, "wall_s": wall, "cpu_s": cpu,
            "per_s": measured / wall, "per_cpu_s": measured / cpu if cpu else 0.0, "concurrent": concurrent,
            "task_steps": steps.steps, "gc": gc_policy, "concluded": verdicts,
            "outcomes": {k: v for c in (clients or {}).values() for k, v in c.outcomes.items()}}


# -- the driver ---------------------------------------------------------------------------


def reference_tree(path: Path, commit: str = REFERENCE_COMMIT) -> Path:
    if not (path / "actors" / "provider.py").exists():
        path.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
    return path


def child(tree: Path, scenario: str, count: int, port: int | None, max_in_flight: int | None, ledger: str,
          gc_policy: str = "serving", ca_file: Path | None = None, steps: bool = False) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", scenario, "--count", str(count), "--ledger", ledger,
               "--gc", gc_policy]
    if steps:  # (lost on the way from the child to here before 2026-12-01: every figure was 0)
        command.append("--steps")
    if port is not None:
        command += ["--emulator-port", str(port)]
    if max_in_flight is not None:
        command += ["--max-in-flight", str(max_in_flight)]
    if ca_file is not None:
        command += ["--ca-file", str(ca_file)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{scenario} on {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="sandbox,email,emulator")
    parser.add_argument("--count", type=int, default=30000, help="deliveries per run on this tree (emulator: a third)")
    parser.add_argument("--reference-count", type=int, default=3000, help="deliveries per run on the reference (emulator: 200)")
    parser.add_argument("--reference-commit", default=REFERENCE_COMMIT, help="the reference tree's commit (git archive)")
    parser.add_argument("--reference", type=Path, default=None, help="where its tree is extracted (default: /tmp/herald-ref-<commit>)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="the emulator's answer time")
    parser.add_argument("--max-in-flight", type=int, default=None, help="provider_max_in_flight for every channel (default: the config's)")
    parser.add_argument("--ledger", choices=("sqlite", "memory"), default="sqlite",
                        help="memory: a diagnostic, the send ledger in a dict (not durable), to see what else limits")
    parser.add_argument("--profile", type=Path, default=None,
                        help="with --child: write a cProfile of the measured process (the event loop's thread) to this file")
    parser.add_argument("--gc", choices=("serving", "default"), default="serving",
                        help="serving (default): the collector's policy `herald serve` applies once up (reactor/gc_policy.py); "
                             "default: CPython's thresholds, nothing frozen (how this bench ran before 2026-12-01)")
    parser.add_argument("--steps", action="store_true",
                        help="count Trio task steps per delivery too (an instrument: costs some CPU itself)")
    parser.add_argument("--child")
    parser.add_argument("--emulator-port", type=int)
    parser.add_argument("--emulator-server", action="store_true")
    parser.add_argument("--h2-emulator", type=Path, help="with --emulator-server: the HTTP/2 one, its certificate in this directory")
    parser.add_argument("--ca-file", type=Path)
    args = parser.parse_args()
    if args.emulator_server:
        if args.h2_emulator is not None:
            trio.run(serve_h2_emulator, args.delay_ms / 1000, args.h2_emulator)
        else:
            trio.run(serve_emulator, args.delay_ms / 1000)
        return
    if args.child:
        if args.ledger == "memory":
            ledger_in_memory()
        if args.profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            result = profiler.runcall(trio.run, measure, args.child, args.count, args.emulator_port, args.max_in_flight, args.steps,
                                      args.gc == "serving", args.ca_file)
            profiler.dump_stats(str(args.profile))
        else:
            result = trio.run(measure, args.child, args.count, args.emulator_port, args.max_in_flight, args.steps,
                              args.gc == "serving", args.ca_file)
        print(json.dumps(result))
        return

    ref_commit = args.reference_commit
    ref_path = args.reference or Path(tempfile.gettempdir()) / f"herald-ref-{ref_commit}"
    reference = None if args.no_reference else reference_tree(ref_path, ref_commit)
    tls_dir = Path(tempfile.mkdtemp(prefix="herald-worker-bench-tls-"))
    atexit.register(shutil.rmtree, tls_dir, True)  # a run that fails leaves no throwaway key behind either
    ca_file = make_tls(tls_dir) if any(s in PUSHED for s in args.scenarios.split(",")) else None
    needs = {"twilio": "actors/clients/twilio.py", "fcm": "actors/clients/http2.py", "apns": "actors/clients/http2.py"}
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for scenario in args.scenarios.split(","):
        server = None
        port = None
        if scenario in SERVED:
            command = [sys.executable, str(Path(__file__).resolve()), "--emulator-server", "--delay-ms", str(args.delay_ms)]
            if scenario in PUSHED:
                command += ["--h2-emulator", str(tls_dir)]
            server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None
            port = int(server.stdout.readline())
        try:
            count = args.count // 3 if scenario in SERVED else args.count
            ref_count = (200 if ref_commit == REFERENCE_COMMIT else args.reference_count // 3) if scenario in SERVED else args.reference_count
            served_cpu = cpu_of(server.pid) if server is not None else 0.0
            ours = child(ROOT, scenario, count, port, args.max_in_flight, args.ledger, args.gc, ca_file, args.steps)
            served_cpu = cpu_of(server.pid) - served_cpu if server is not None else 0.0
            theirs = (child(reference, scenario, ref_count, port, None, args.ledger, args.gc, ca_file if scenario in PUSHED else None,
                            args.steps)
                      if reference is not None and (scenario not in needs or (reference / needs[scenario]).exists()) else None)
        finally:
            if server is not None:
                server.terminate()
                server.wait(timeout=10)
        label = f"{scenario} ({'+'.join(CHANNELS[scenario])}{', ledger in memory: NOT durable' if args.ledger == 'memory' else ''})"
        line = (f"{label}: {ours['deliveries']} deliveries in {ours['wall_s']:.2f} s, "
                f"CPU {ours['cpu_s']:.2f} s ({1000 * ours['cpu_s'] / max(1, ours['deliveries']):.3f} ms per delivery): "
                f"{ours['per_s']:,.0f}/s per process, {ours['per_cpu_s']:,.0f}/s per CPU second (gc: {ours.get('gc')})")
        if theirs is not None:
            line += (f" | reference {ref_commit}: {theirs['deliveries']} in {theirs['wall_s']:.2f} s "
                     f"({1000 * theirs['cpu_s'] / max(1, theirs['deliveries']):.3f} ms CPU per delivery), "
                     f"{theirs['per_s']:,.0f}/s, {theirs['per_cpu_s']:,.0f}/CPU s | ratio {ours['per_s'] / theirs['per_s']:.1f}x per process, "
                     f"{ours['per_cpu_s'] / theirs['per_cpu_s']:.1f}x per CPU second")
        if server is not None:
            line += f" | emulator: {1000 * served_cpu / max(1, ours['deliveries']):.3f} ms CPU per request"
        if args.steps:
            line += f" | task steps per delivery {ours['task_steps'] / max(1, ours['deliveries']):.2f}"
            if theirs is not None:
                line += f" (reference {theirs['task_steps'] / max(1, theirs['deliveries']):.2f})"
        if ours.get("concluded") is not None:
            line += f" | concluded: {ours['concluded']}"
            if set(ours["concluded"]) - {"delivered", "sent"} or sum(ours["concluded"].values()) < ours["deliveries"]:
                line += " (NOT all delivered)"
        if set(ours.get("outcomes") or {"Sent": 1}) != {"Sent"}:
            line += f" | verdicts: {ours['outcomes']} (NOT all sent)"
        if not ours["complete"] or (theirs is not None and not theirs["complete"]):
            line += " (INCOMPLETE: a run hit its deadline)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
