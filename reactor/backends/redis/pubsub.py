"""One Redis pub/sub connection, read by a worker thread, delivering to Trio in batches.

The connection is this listener's own (a subscribed connection can do nothing else). A
worker thread (trio.to_thread, for as long as the listener is open) waits for replies in
a short timeout loop (POLL_S), so it notices a stop within that; it reads whatever has
arrived, up to BATCH replies, and hands them to Trio in one crossing
(trio.from_thread.run_sync). Commands (SUBSCRIBE, UNSUBSCRIBE) are sent from Trio's side
(a worker thread each, under a lock), each followed by a PING carrying a token: Redis
answers a connection's commands in order, so the PING's reply says the command before it
is in effect (a ["pong", token] message while subscribed to something, the bare token once
the last UNSUBSCRIBE has left pub/sub mode). That is how `subscribe` returns only once the subscription is (a publish
sent after it reaches this connection).

If the connection fails (Redis down), the listener is lost: `on_lost` is called once and
the thread ends; a new listener reconnects.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import redis
import trio

from reactor.ports import PortUnavailable

POLL_S = 0.05  # how often the reading thread looks at its stop flag
BATCH = 512  # replies handed to Trio in one crossing, at most


class Listener:
    """A pub/sub connection: `command(...)` sends and waits until it is in effect; messages go to `on_message`."""

    def __init__(self, connection_kwargs: dict[str, Any], on_message: Callable[[bytes, bytes], None],
                 on_lost: Callable[[str], None], timeout_s: float) -> None:
        self._connection = redis.Connection(**connection_kwargs)  # type: ignore[no-untyped-call]
        self._on_message = on_message
        self._on_lost = on_lost
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._waiters: dict[bytes, trio.Event] = {}
        self._token: trio.lowlevel.TrioToken | None = None
        self.lost: str | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then read until stopped (in a worker thread); use with nursery.start."""
        self._token = trio.lowlevel.current_trio_token()
        try:
            await trio.to_thread.run_sync(self._connection.connect)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise PortUnavailable(f"Redis pub/sub cannot connect: {exc}") from exc
        task_status.started()
        try:
            await trio.to_thread.run_sync(self._read)
        finally:
            await trio.to_thread.run_sync(self._connection.disconnect)

    def stop(self) -> None:
        """The reading thread ends within POLL_S (and the connection closes: Redis drops its subscriptions)."""
        self._stop.set()

    def _read(self) -> None:
        connection = self._connection
        while not self._stop.is_set():
            try:
                if not connection.can_read(timeout=POLL_S):
                    continue
                batch = [connection.read_response()]
                while len(batch) < BATCH and connection.can_read(timeout=0):
                    batch.append(connection.read_response())
            except Exception as exc:  # a dropped connection, a timeout mid-reply: this listener is done
                if not self._stop.is_set():
                    trio.from_thread.run_sync(self._lose, f"{type(exc).__name__}: {exc}", trio_token=self._token)
                return
            trio.from_thread.run_sync(self._deliver, batch, trio_token=self._token)

    def _deliver(self, batch: list[Any]) -> None:
        for reply in batch:
            if isinstance(reply, bytes):
                # PING's reply once the connection is subscribed to nothing (the last UNSUBSCRIBE left
                # pub/sub mode): the token itself, not a ["pong", token] message
                self._confirm(reply)
                continue
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind == b"message":
                self._on_message(reply[1], reply[2])
            elif kind == b"pong":
                self._confirm(reply[1])

    def _confirm(self, token: bytes) -> None:
        waiter = self._waiters.pop(token, None)
        if waiter is not None:
            waiter.set()

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
            self._stop.set()
            for waiter in self._waiters.values():
                waiter.set()
            self._on_lost(why)

    async def command(self, *args: str | bytes) -> None:
        """Send a command (SUBSCRIBE, UNSUBSCRIBE) and return once Redis has applied it."""
        if self.lost is not None:
            raise PortUnavailable(f"Redis pub/sub connection lost: {self.lost}")
        token = b"%d" % next(self._tokens)
        done = self._waiters[token] = trio.Event()
        packed = self._connection.pack_commands([args, ("PING", token)])  # type: ignore[no-untyped-call]

        def send() -> None:
            with self._send_lock:
                self._connection.send_packed_command(packed, check_health=False)  # type: ignore[no-untyped-call]

        try:
            await trio.to_thread.run_sync(send)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._lose(str(exc))
            raise PortUnavailable(f"Redis pub/sub connection lost: {exc}") from exc
        with trio.move_on_after(self._timeout_s * 2):
            await done.wait()
        if self.lost is not None:
            raise PortUnavailable(f"Redis pub/sub connection lost: {self.lost}")
        if not done.is_set():
            self._waiters.pop(token, None)
            raise PortUnavailable(f"Redis did not confirm {args[0]!r} within {self._timeout_s * 2} s")
