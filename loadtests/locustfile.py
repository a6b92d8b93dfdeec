"""The load testers' locust suite for Herald: senders, subscribers, readers, and load shapes.

Locust monkey-patches its process with gevent, so it runs from its own venv, `.venv-load`
(scripts/install-load-deps.sh, from requirements/load.txt), never in Herald's venv, the
server's process or the test process; this file imports nothing of Herald's. The one
command that starts a node, runs a bounded scenario and writes the report is
`make load` (loadtests/run_load.py); loadtests/README.md ("The locust suite") has the
rest: the options, the distributed runs, what each figure measures.

User classes (pick some on locust's command line; weights with --herald-weights):

    Sender         POST /v1/notifications, one at a time, no think time (--herald-wait-s)
    BatchSender    POST /v1/notifications/batch, --herald-batch-size items each
    TopicSender    PUT /v1/topics/{topic}/subscribers, then POST /v1/notifications with "topic"
                   (NEEDS the topics feature, issue 10 item 5: on a node that answers 404 for
                   the topics route it says so once and idles, sending nothing)
    Subscriber     a WebSocket on a subscriber token of its own user; every
                   --herald-subscriber-interval-s it POSTs a web notification to that user and
                   times POST start -> the frame carrying that id: request type `deliver:web`;
                   acks every frame
    SseSubscriber  the same over Server-Sent Events: request type `deliver:sse`
    Reader         GET a status, a user's history, a user's inbox

`deliver:web` is measured inside one user (it sends to the user it listens as), so it needs no
clock or state shared between processes: it holds with --processes N and with workers on other
machines. It includes the POST's own time, the node's pipeline (bus, consumer, web provider,
session) and the locust process's scheduling delay (an overloaded locust worker inflates it:
keep its CPU below ~90 %).

Each accepted notification id is appended, with its channels, to a file per locust process
under --herald-ids-dir (when set), so loadtests/run_load.py can ask the node afterwards what
became of each (lost = accepted - delivered).

The user-id space: a share --herald-hot-share of the sends goes to --herald-hot-users hot users
(`hot-<n>`), the rest spreads uniformly over --herald-users (`user-<n>`). Subscribers use ids
of their own (`sub-<random>`). Every --herald-* option also reads its HERALD_* environment
variable (e.g. HERALD_API_KEY).

Shape: `HeraldShape` (--herald-shape steady|ramp|flash) reads -u (the base users), -r and
-t: steady holds -u users; ramp rises from 0 to -u over --herald-ramp-s (default the whole
run); flash ramps to -u, holds, spikes to -u x --herald-multiple, holds, falls back, holds
(--herald-phases ramp=..,base=..,spike=..,hold=..,fall=..,tail=.. seconds; phases not given
share what is left of -t). The user count per second is in the CSV history
(--csv-full-history).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import quote, urlsplit

import gevent
import requests
import websocket
from gevent.event import Event
from locust import FastHttpUser, LoadTestShape, events, task
from locust.exception import StopUser

import load_shapes  # loadtests/load_shapes.py: locust puts this file's folder on sys.path
from load_matching import Deliveries  # loadtests/load_matching.py

log = logging.getLogger("herald.load")

WEB_ONLY_SHARE_DEFAULT = 0.75
STATUS_GRACE_S = 2.0  # a status read this soon after the 202 may still be a 404 (the status is written just after)
USER_CLASSES = ("Sender", "BatchSender", "TopicSender", "Subscriber", "SseSubscriber", "Reader")


# ----------------------------------------------------------------------------- options


@events.init_command_line_parser.add_listener
def _herald_options(parser: Any) -> None:
    def add(name: str, default: Any, help_text: str, **extra: Any) -> None:
        env = "HERALD_" + name.upper().replace("-", "_")
        parser.add_argument(f"--herald-{name}", env_var=env, default=default, help=f"{help_text} (env {env})", **extra)

    add("api-key", "", "Herald's API key (a node's <data-dir>/api-key)", is_secret=True)
    add("edge-host", "", "base URL of the WebSocket/SSE front end when it is not --host (a cluster's edge nodes)")
    add("users", 1000, "how many user ids the sends spread over (the long tail)", type=int)
    add("hot-users", 10, "how many hot users", type=int)
    add("hot-share", 0.2, "the share of sends that go to the hot users", type=float)
    add("web-share", WEB_ONLY_SHARE_DEFAULT, "the share of single sends that are web-only (the rest: all four channels)", type=float)
    add("wait-s", 0.0, "think time of senders and readers: uniform in [0, this] seconds (0: closed loop)", type=float)
    add("batch-size", 100, "items per BatchSender call (1-1000)", type=int)
    add("topic-subscribers", 100, "subscribers of each TopicSender's topic", type=int)
    add("topic-interval-s", 1.0, "seconds between a TopicSender's sends (each fans out to every subscriber)", type=float)
    add("subscriber-interval-s", 1.0, "a (Sse)Subscriber sends to itself once every this many seconds (paced)", type=float)
    add("deliver-timeout-s", 10.0, "a frame that has not come this long after its POST is a deliver:* failure", type=float)
    add("deliver-grace-s", 3.0, "at stop, how long a subscriber waits for the frames of its last sends", type=float)
    add("weights", "", "class weights, e.g. Sender=6,Subscriber=1 (positive integers)")
    add("ids-dir", "", "a folder where each locust process appends the ids it got accepted (for run_load.py)")
    add("shape", "steady", "load shape: steady, ramp or flash", choices=list(load_shapes.SHAPES))
    add("multiple", 5.0, "flash: the spike's users as a multiple of -u", type=float)
    add("phases", "", "flash: seconds per phase, e.g. ramp=5,base=5,spike=2,hold=10,fall=3,tail=5")
    add("ramp-s", 0.0, "ramp: seconds to reach -u (0: the whole run)", type=float)


_settings_cache: dict[int, Any] = {}


def settings(environment: Any) -> Any:
    """The parsed --herald-* options (with defaults when locust runs as a library with none)."""
    options = environment.parsed_options
    if options is None or not hasattr(options, "herald_api_key"):
        raise RuntimeError("run this file with the locust command (its --herald-* options are registered there)")
    return options


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    weights = (getattr(options, "herald_weights", "") or "").strip()
    if weights:
        by_name = {cls.__name__: cls for cls in (Sender, BatchSender, TopicSender, Subscriber, SseSubscriber, Reader)}
        for part in filter(None, (p.strip() for p in weights.split(","))):
            name, _, value = part.partition("=")
            if name not in by_name or not value.isdigit() or int(value) < 1:
                raise SystemExit(f"locustfile: --herald-weights {part!r}: expected Class=positive integer, classes {', '.join(USER_CLASSES)}")
            by_name[name].weight = int(value)
    if getattr(options, "herald_phases", ""):
        try:
            load_shapes.parse_phases(options.herald_phases)
        except ValueError as error:
            raise SystemExit(f"locustfile: --herald-phases: {error}") from None


@events.test_start.add_listener
def _check_settings(environment: Any, **_: Any) -> None:
    options = settings(environment)
    if not options.herald_api_key:
        raise SystemExit("locustfile: set HERALD_API_KEY or --herald-api-key (a node writes it to <data-dir>/api-key)")
    host = environment.host or ""
    if not host.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        log.warning("--host %r is not loopback; make sure you mean to load it", host)


# ----------------------------------------------------------------------------- what was sent

RECENT: deque[tuple[str, str, float]] = deque(maxlen=2000)  # (notification id, user id, accepted at), this process


class SentLog:
    """Appends `id<TAB>kind<TAB>channels` per accepted notification to a file of this process (pid in its name).

    A topic send adds a fourth column, its subscribers as `<prefix>:<count>` (`user-:100`: user-0 .. user-99),
    so run_load.py can derive each subscriber's copy and ask after it.
    """

    def __init__(self) -> None:
        self._file: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def record(self, environment: Any, nid: str, kind: str, channels: list[str], extra: str = "") -> None:
        folder = getattr(environment.parsed_options, "herald_ids_dir", "") if environment.parsed_options else ""
        if not folder:
            return
        with self._lock:
            if self._file is None or self._pid != os.getpid():
                os.makedirs(folder, exist_ok=True)
                self._pid = os.getpid()
                name = f"sent-{socket.gethostname()}-{self._pid}.tsv"
                self._file = open(os.path.join(folder, name), "a", buffering=1 << 16)
            self._file.write(f"{nid}\t{kind}\t{','.join(channels)}{chr(9) + extra if extra else ''}\n")

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()


SENT = SentLog()


_cpu_at_start: list[float] = []


@events.test_start.add_listener
def _cpu_start(**_: Any) -> None:
    _cpu_at_start[:] = [time.process_time()]


@events.test_stop.add_listener
def _flush_sent(environment: Any, **_: Any) -> None:
    """Flush the ids; write this process's CPU seconds over the test to <ids-dir>/cpu-<host>-<pid>.txt."""
    SENT.flush()
    folder = getattr(environment.parsed_options, "herald_ids_dir", "") if environment.parsed_options else ""
    if folder and _cpu_at_start:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"cpu-{socket.gethostname()}-{os.getpid()}.txt"), "w") as handle:
            handle.write(f"{time.process_time() - _cpu_at_start[0]:.3f}\n")


@events.quitting.add_listener
def _flush_at_quit(**_: Any) -> None:
    SENT.flush()


# ----------------------------------------------------------------------------- bodies

_counter = itertools.count(1)


def web_body(user_id: str, n: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "channels": ["web"],
        "content": {"web": {"title": f"Hello {n}", "body": "You have a new message", "url": "https://example.org/inbox"}},
    }


def all_channels_body(user_id: str, n: int) -> dict[str, Any]:
    code = f"{n % 10000:04d}"
    return {
        "user_id": user_id,
        "channels": ["email", "sms", "push", "web"],
        "content": {
            "email": {"subject": f"Your code {code}", "text": f"Code {code}", "html": f"<p>Code <b>{code}</b></p>"},
            "sms": {"text": f"Code {code}"},
            "push": {"title": "Code", "body": code, "data": {"kind": "otp"}},
            "web": {"title": "Code", "body": code, "url": "https://example.org/codes"},
        },
        "to": {"email": f"{user_id}@example.org", "phone": "+15555550100", "device_token": "tok"},
        "priority": "high",
    }


def pick_user(options: Any, rng: random.Random) -> str:
    """A recipient: a hot user with probability --herald-hot-share, else one of the long tail."""
    if options.herald_hot_users > 0 and rng.random() < options.herald_hot_share:
        return f"hot-{rng.randrange(options.herald_hot_users)}"
    return f"user-{rng.randrange(max(options.herald_users, 1))}"


def problem_text(response: Any) -> str:
    return f"{response.status_code}: {(response.text or '')[:200]}"


class HeraldHttpUser(FastHttpUser):
    """What every HTTP user shares: the API key header, the options, think time."""

    abstract = True

    def wait_time(self) -> float:
        wait = self.options.herald_wait_s
        return self.rng.uniform(0, wait) if wait > 0 else 0.0

    def on_start(self) -> None:
        self.options = settings(self.environment)
        self.rng = random.Random()
        self.auth = {"Authorization": f"Bearer {self.options.herald_api_key}"}

    def post_notification(self, body: dict[str, Any], name: str, kind: str) -> str | None:
        """POST one notification; its id once accepted (202), else None and a failure in the stats."""
        with self.client.post("/v1/notifications", json=body, headers=self.auth, name=name, catch_response=True) as response:
            if response.status_code != 202:
                response.failure(problem_text(response))
                return None
            try:
                nid = response.json()["notification_id"]
            except (ValueError, KeyError, TypeError):
                response.failure("202 without a notification_id")
                return None
            response.success()
        SENT.record(self.environment, nid, kind, body.get("channels", []))
        if "user_id" in body:
            RECENT.append((nid, body["user_id"], time.monotonic()))
        return nid


# ----------------------------------------------------------------------------- senders


class Sender(HeraldHttpUser):
    """Single POSTs, web-only or all four channels (--herald-web-share), as fast as the node answers by default."""

    weight = 6

    @task
    def send(self) -> None:
        n = next(_counter)
        user = pick_user(self.options, self.rng)
        if self.rng.random() < self.options.herald_web_share:
            self.post_notification(web_body(user, n), "/v1/notifications [web]", "single")
        else:
            self.post_notification(all_channels_body(user, n), "/v1/notifications [all channels]", "single")


class BatchSender(HeraldHttpUser):
    """POST /v1/notifications/batch: --herald-batch-size web notifications per call."""

    weight = 1

    @task
    def send_batch(self) -> None:
        size = min(max(self.options.herald_batch_size, 1), 1000)
        items = [web_body(pick_user(self.options, self.rng), next(_counter)) for _ in range(size)]
        with self.client.post(
            "/v1/notifications/batch", json={"items": items}, headers=self.auth, name="/v1/notifications/batch", catch_response=True
        ) as response:
            if response.status_code != 202:
                response.failure(problem_text(response))
                return
            try:
                answer = response.json()
                results = answer["items"]
            except (ValueError, KeyError, TypeError):
                response.failure("202 without items")
                return
            if answer.get("rejected"):
                response.failure(f"{answer['rejected']} of {size} items rejected: {json.dumps(results)[:200]}")
            else:
                response.success()
        now = time.monotonic()
        for item, result in zip(items, results):
            nid = result.get("notification_id") if isinstance(result, dict) else None
            if nid:
                SENT.record(self.environment, nid, "batch", item["channels"])
                RECENT.append((nid, item["user_id"], now))


TOPICS_MISSING = "TopicSender: skipped: the node answers 404 for PUT /v1/topics/{topic}/subscribers: it needs the topics feature (issue 10 item 5)"
_topics_missing_said = False


class TopicSender(HeraldHttpUser):
    """NEEDS THE TOPICS FEATURE. Subscribes --herald-topic-subscribers users to a topic of its own, then sends to the topic.

    Against a node without topics (404 for the subscribers route) it logs TOPICS_MISSING once
    per process, records nothing as a failure and idles (sends nothing) until the run ends.
    """

    weight = 1

    def wait_time(self) -> float:
        return 3600.0 if self.idle else self.options.herald_topic_interval_s

    def on_start(self) -> None:
        super().on_start()
        global _topics_missing_said
        self.idle = False
        self.topic = f"load-{uuid.uuid4().hex[:12]}"
        users = [f"user-{i}" for i in range(min(self.options.herald_topic_subscribers, max(self.options.herald_users, 1)))]
        self.members = f"user-:{len(users)}"
        for start in range(0, len(users), 1000):
            with self.client.put(
                f"/v1/topics/{self.topic}/subscribers", json={"user_ids": users[start:start + 1000]}, headers=self.auth,
                name="/v1/topics/[topic]/subscribers", catch_response=True,
            ) as response:
                if response.status_code == 404:
                    response.success()  # not the node's fault: the feature is not there
                    if not _topics_missing_said:
                        _topics_missing_said = True
                        log.warning(TOPICS_MISSING)
                        print(TOPICS_MISSING, flush=True)
                    # idle rather than stop: a stopped user is spawned again by the shape, and asks again
                    self.idle = True
                    return
                if response.status_code not in (200, 201, 204):
                    response.failure(problem_text(response))
                    self.idle = True
                    return
                response.success()

    @task
    def send_to_topic(self) -> None:
        if self.idle:
            return
        n = next(_counter)
        body = {
            "topic": self.topic,
            "channels": ["web"],
            "content": {"web": {"title": f"Sale {n}", "body": "Everything must go", "url": "https://example.org/sale"}},
        }
        with self.client.post("/v1/notifications", json=body, headers=self.auth, name="/v1/notifications [topic]",
                              catch_response=True) as response:
            if response.status_code != 202:
                response.failure(problem_text(response))
                return
            try:
                nid = response.json()["notification_id"]
            except (ValueError, KeyError, TypeError):
                response.failure("202 without a notification_id")
                return
            response.success()
        SENT.record(self.environment, nid, "topic", ["web"], self.members)


# ----------------------------------------------------------------------------- subscribers


class SubscriberBase(HeraldHttpUser):
    """A user that listens as itself and sends to itself every --herald-subscriber-interval-s."""

    abstract = True
    request_type = "deliver:web"
    delivery_name = "POST to WebSocket frame"

    def wait_time(self) -> float:
        """Pacing: one send every --herald-subscriber-interval-s, whatever the POST took (none skipped to catch up)."""
        return max(0.0, self.options.herald_subscriber_interval_s - (time.perf_counter() - self.task_started))

    def on_start(self) -> None:
        super().on_start()
        self.task_started = time.perf_counter()
        self.user_id = f"sub-{uuid.uuid4().hex[:16]}"
        self.deliveries = Deliveries(self.report_delivery, self.options.herald_deliver_timeout_s)
        self.ready = Event()
        self.closing = False
        self.reader: Any = None
        edge = (self.options.herald_edge_host or self.environment.host).rstrip("/")
        self.edge = edge
        with self.client.post(f"/v1/users/{self.user_id}/tokens", json={"ttl_s": 3600}, headers=self.auth,
                              name="/v1/users/[user]/tokens", catch_response=True) as response:
            if response.status_code != 201 and response.status_code != 200:
                response.failure(problem_text(response))
                raise StopUser()
            try:
                self.token = response.json()["token"]
            except (ValueError, KeyError, TypeError):
                response.failure("no token in the answer")
                raise StopUser() from None
            response.success()
        self.connect()
        if not self.ready.wait(timeout=10):
            self.fire_connect(0, "not synced within 10 s")
            raise StopUser()

    def report_delivery(self, ms: float, length: int, error: str | None) -> None:
        self.environment.events.request.fire(
            request_type=self.request_type, name=self.delivery_name, response_time=ms, response_length=length,
            exception=Exception(error) if error else None, context={},
        )

    def fire_connect(self, ms: float, error: str | None) -> None:
        self.environment.events.request.fire(
            request_type=self.connect_type, name=self.connect_name, response_time=ms, response_length=0,
            exception=Exception(error) if error else None, context={},
        )

    def connect(self) -> None:
        raise NotImplementedError

    @task
    def send_to_myself(self) -> None:
        if not self.ready.is_set():
            raise StopUser()
        started = self.task_started = time.perf_counter()
        nid = self.post_notification(web_body(self.user_id, next(_counter)), "/v1/notifications [to a subscriber]", "subscriber")
        if nid is not None:
            self.deliveries.posted(nid, started)
        self.deliveries.expire()

    def on_stop(self) -> None:
        if not hasattr(self, "deliveries"):  # on_start failed before it listened (locust calls on_stop all the same)
            return
        deadline = time.perf_counter() + self.options.herald_deliver_grace_s
        while self.deliveries.pending and time.perf_counter() < deadline and self.reader is not None and not self.reader.dead:
            gevent.sleep(0.05)
        self.deliveries.expire(final=True)
        self.closing = True
        if self.reader is not None:
            self.reader.kill(block=True, timeout=2)
        if hasattr(self, "ws") or hasattr(self, "stream"):
            self.disconnect()

    def disconnect(self) -> None:
        raise NotImplementedError


class Subscriber(SubscriberBase):
    """A WebSocket session (`WS /v1/ws?token=`): sync, ack every frame, time each of its sends to its frame (`deliver:web`)."""

    weight = 2
    connect_type = "WS"
    connect_name = "/v1/ws connect+sync"

    def connect(self) -> None:
        parts = urlsplit(self.edge)
        scheme = "wss" if parts.scheme == "https" else "ws"
        url = f"{scheme}://{parts.netloc}/v1/ws?token={quote(self.token)}"
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(url, timeout=10, enable_multithread=False)
            self.ws.send(json.dumps({"type": "sync"}))
        except Exception as error:  # noqa: BLE001 - any connect failure is reported as one
            self.fire_connect((time.perf_counter() - started) * 1000, f"connect: {error!r}")
            raise StopUser() from None
        self.reader = gevent.spawn(self.read_frames, started)

    def read_frames(self, started: float) -> None:
        ws = self.ws
        ws.settimeout(1.0)
        last_ping = time.monotonic()
        while not self.closing:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                raw = None
            except Exception as error:  # noqa: BLE001 - the session ended
                if not self.closing:
                    self.fire_connect(0, f"session closed: {error!r}")
                return
            if time.monotonic() - last_ping > 25:
                ws.send('{"type":"ping"}')
                last_ping = time.monotonic()
            if not raw:
                self.deliveries.expire()
                continue
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            kind = frame.get("type")
            if kind == "notification":
                ws.send(json.dumps({"type": "ack", "id": frame["id"]}))
                self.deliveries.seen(frame["id"], len(raw))
            elif kind == "synced":
                if not self.ready.is_set():
                    self.fire_connect((time.perf_counter() - started) * 1000, None)
                    self.ready.set()
            elif kind == "error":
                self.environment.events.request.fire(
                    request_type=self.connect_type, name="/v1/ws error frame", response_time=0, response_length=len(raw),
                    exception=Exception(str(frame.get("detail"))[:200]), context={},
                )

    def disconnect(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001 - already gone
            pass


class SseSubscriber(SubscriberBase):
    """An SSE stream (`GET /v1/sse?token=`): time each of its sends to its event (`deliver:sse`); SSE has no ack."""

    weight = 1
    request_type = "deliver:sse"
    delivery_name = "POST to SSE event"
    connect_type = "SSE"
    connect_name = "/v1/sse connect+synced"

    def connect(self) -> None:
        started = time.perf_counter()
        try:
            self.stream = requests.get(f"{self.edge}/v1/sse", params={"token": self.token}, stream=True, timeout=(10, None),
                                       headers={"Accept": "text/event-stream"})
        except Exception as error:  # noqa: BLE001 - any connect failure is reported as one
            self.fire_connect((time.perf_counter() - started) * 1000, f"connect: {error!r}")
            raise StopUser() from None
        if self.stream.status_code != 200:
            self.fire_connect((time.perf_counter() - started) * 1000, problem_text(self.stream))
            raise StopUser()
        self.reader = gevent.spawn(self.read_events, started)

    def read_events(self, started: float) -> None:
        event, data, size = "", "", 0
        lines = self.stream.iter_lines(chunk_size=None, decode_unicode=True)
        while not self.closing:
            try:
                line = next(lines)
            except StopIteration:
                if not self.closing:
                    self.fire_connect(0, "the stream ended")
                return
            except Exception as error:  # noqa: BLE001 - the stream broke
                if not self.closing:
                    self.fire_connect(0, f"stream: {error!r}")
                return
            if line is None:
                continue
            if line == "":
                self.on_event(event, data, size, started)
                event, data, size = "", "", 0
                continue
            size += len(line) + 1
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].lstrip()

    def on_event(self, event: str, data: str, size: int, started: float) -> None:
        if event == "synced" and not self.ready.is_set():
            self.fire_connect((time.perf_counter() - started) * 1000, None)
            self.ready.set()
        elif event == "notification":
            try:
                self.deliveries.seen(json.loads(data)["id"], size)
            except (ValueError, KeyError, TypeError):
                pass
        elif event == "error":
            self.fire_connect(0, f"error event: {data[:200]}")
        self.deliveries.expire()

    def disconnect(self) -> None:
        try:
            self.stream.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


# ----------------------------------------------------------------------------- readers


class Reader(HeraldHttpUser):
    """Reads: the status of a recent notification, a user's history, a user's inbox (with the API key)."""

    weight = 2

    def on_start(self) -> None:
        super().on_start()
        self.own: deque[tuple[str, str, float]] = deque(maxlen=50)
        for _ in range(3):  # something to read even when no sender runs in this process
            user = pick_user(self.options, self.rng)
            nid = self.post_notification(web_body(user, next(_counter)), "/v1/notifications [reader seed]", "reader")
            if nid:
                self.own.append((nid, user, time.monotonic()))

    def known(self) -> tuple[str, str, float] | None:
        pool = RECENT if RECENT else self.own
        return self.rng.choice(pool) if pool else None

    def target_user(self) -> str:
        known = self.known()
        return known[1] if known and self.rng.random() < 0.5 else pick_user(self.options, self.rng)

    @task(2)
    def read_status(self) -> None:
        known = self.known()
        if known is None:
            return
        nid, _, accepted_at = known
        with self.client.get(f"/v1/notifications/{nid}", headers=self.auth, name="/v1/notifications/[id]",
                             catch_response=True) as response:
            if response.status_code == 200:
                response.success()
            elif response.status_code == 404 and time.monotonic() - accepted_at < STATUS_GRACE_S:
                response.success()  # accepted, its status not written yet
            else:
                response.failure(problem_text(response))

    def read_list(self, path: str, name: str) -> None:
        with self.client.get(path, headers=self.auth, name=name, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(problem_text(response))
                return
            try:
                items = response.json()["items"]
            except (ValueError, KeyError, TypeError):
                response.failure("no items in the answer")
                return
            if isinstance(items, list):
                response.success()
            else:
                response.failure("items is not a list")

    @task(1)
    def read_history(self) -> None:
        self.read_list(f"/v1/users/{self.target_user()}/notifications?limit=20", "/v1/users/[user]/notifications")

    @task(1)
    def read_inbox(self) -> None:
        self.read_list(f"/v1/users/{self.target_user()}/inbox?limit=20", "/v1/users/[user]/inbox")


# ----------------------------------------------------------------------------- shape


class HeraldShape(LoadTestShape):
    """--herald-shape steady|ramp|flash over -u (base users), -r (spawn rate) and -t (the run, required)."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.stages: list[load_shapes.Stage] | None = None

    def plan(self) -> list[load_shapes.Stage]:
        options = self.runner.environment.parsed_options
        users = int(options.num_users or 1)
        rate = float(options.spawn_rate or users)
        duration = float(options.run_time or 0)
        shape = options.herald_shape
        if duration <= 0:
            if shape != "steady":
                raise SystemExit(f"locustfile: --herald-shape {shape} needs -t/--run-time")
            return load_shapes.steady(users, rate, float("inf"))  # until stopped by hand (the web UI, Ctrl-C)
        if shape == "ramp":
            return load_shapes.ramp(users, duration, options.herald_ramp_s or None)
        if shape == "flash":
            phases = load_shapes.flash_phases(duration, load_shapes.parse_phases(options.herald_phases or ""))
            return load_shapes.flash_sale(users, options.herald_multiple, phases)
        return load_shapes.steady(users, rate, duration)

    def tick(self) -> tuple[int, float] | None:
        if self.stages is None:
            self.stages = self.plan()
            log.info("shape %s: %s", self.runner.environment.parsed_options.herald_shape, self.stages)
        return load_shapes.tick(self.stages, self.get_run_time())
