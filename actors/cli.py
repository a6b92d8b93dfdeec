"""The `herald` command: serve a node, send a notification, issue a subscriber token, listen.

Every command reads the settings `herald serve` reads: the TOML file (--config or
HERALD_CONFIG), the HERALD_* env vars, the data dir. So `herald send` and `herald listen`,
run where the node was started, reach that node on whatever port it serves, with the
data dir's API key; --server (HERALD_URL) and --api-key (HERALD_API_KEY) name another.

What goes wrong at start-up (the port taken, the data dir unusable, a bad setting, a
package missing) is one line on stderr and a non-zero exit (actors/startup.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .check import CheckError
from .simulate.command import SimulateError
from .startup import explain, leaves, missing_dependency  # the standard library only: it reports a missing package

if TYPE_CHECKING:
    from .config import Config

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_WHERE = "the URL comes from --server, HERALD_URL, or the host and port `herald serve` reads (HERALD_PORT, --config)"


class CliError(Exception):
    """A failure the CLI reports in one line, with its exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace, **overrides: Any) -> Config:
    """The settings `herald serve` would use here: --config/HERALD_CONFIG, HERALD_* env vars, --data-dir."""
    from .config import ConfigError, load_config

    data_dir = getattr(args, "data_dir", None)
    try:
        return load_config(getattr(args, "config", None), data_dir=Path(data_dir) if data_dir else None, **overrides)
    except ConfigError as exc:
        raise CliError(f"configuration error: {exc}", 2) from None


def _hold_boot_logs(level: str) -> tuple[logging.Handler, logging.handlers.MemoryHandler]:
    """Log to stderr, holding records below WARNING until the node is up: a failed start prints only its error."""
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter(_LOG_FORMAT))
    held = logging.handlers.MemoryHandler(100_000, flushLevel=logging.WARNING, target=stream, flushOnClose=False)
    logging.basicConfig(level=level, handlers=[held], force=True)
    return stream, held


def _release_boot_logs(stream: logging.Handler, held: logging.handlers.MemoryHandler) -> None:
    held.flush()
    root = logging.getLogger()
    root.removeHandler(held)
    root.addHandler(stream)
    held.close()


def _serve(args: argparse.Namespace) -> int:
    config = _config(args, host=args.host, port=args.port, role=args.role)
    stream, held = _hold_boot_logs(config.log_level)
    import trio

    from reactor.gc_policy import tune_for_serving

    from .app import run_herald
    from .services.credentials import API_KEY_FILE

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            herald = await nursery.start(run_herald, config)
            tune_for_serving()  # boot objects frozen, full collections rare (reactor/gc_policy.py)
            _release_boot_logs(stream, held)
            key_file = config.data_dir / API_KEY_FILE  # written by the node, 0600 from its creation
            if args.json:
                where = {"url": herald.url, "api_key_file": str(key_file.resolve()), "outbox": str(config.outbox_dir.resolve()),
                         "sms": str((config.data_dir / "sms.jsonl").resolve()), "push": str((config.data_dir / "push.jsonl").resolve()),
                         "webhook": str((config.data_dir / "webhook.jsonl").resolve())}
                print(json.dumps(where), flush=True)
                return
            print(f"herald: serving on {herald.url}", flush=True)
            if herald.api_key:
                print(f"herald: API key in {key_file.resolve()}", flush=True)
            else:  # a node of a cluster whose key another node generated (actors/services/credentials.py)
                print("herald: API key: the cluster's, in the api-key file of the node that generated it (or set HERALD_API_KEY)", flush=True)
            print(f"herald: email outbox {config.outbox_dir.resolve()}", flush=True)
            print(f"herald: sms and push in {(config.data_dir / 'sms.jsonl').resolve()}, {(config.data_dir / 'push.jsonl').resolve()}", flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # nested ExceptionGroups from the supervision tree
        message = explain(exc, config)
        if message is None:
            raise
        held.setTarget(None)  # the boot's INFO lines go with the failed start
        held.buffer.clear()
        raise CliError(message) from None
    return 0


def node_url(config: Config) -> str:
    """The URL of the node these settings serve: its host (loopback for a wildcard bind) and port."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.host, config.host)
    if config.port == 0:
        raise CliError("the configured port is 0 (a free port chosen at start): pass --server with the URL `herald serve` printed")
    return f"http://[{host}]:{config.port}" if ":" in host else f"http://{host}:{config.port}"


def _client_settings(args: argparse.Namespace) -> tuple[str, str]:
    """The node's URL and the API key: options, then HERALD_URL and HERALD_API_KEY, then the settings of `herald serve`."""
    url = args.server or os.environ.get("HERALD_URL")
    key = args.api_key or os.environ.get("HERALD_API_KEY")
    if not url or not key:
        config = _config(args)
        url = url or node_url(config)
        key = key or config.api_key
        if not key:
            from .services.credentials import API_KEY_FILE

            key_file = config.data_dir / API_KEY_FILE
            if not key_file.exists():
                raise CliError(
                    f"no API key: {key_file} does not exist (run this where `herald serve` runs, with the same "
                    "--data-dir or HERALD_DATA_DIR; or pass --api-key, or set HERALD_API_KEY)"
                )
            try:
                key = key_file.read_text().strip()
            except OSError as exc:
                raise CliError(f"no API key: cannot read {key_file}: {exc.strerror or exc}") from None
    return url.rstrip("/"), key


def _unreachable(url: str, exc: Exception) -> CliError:
    return CliError(f"cannot reach {url}: {exc or type(exc).__name__}; is `herald serve` running there? ({_WHERE})")


def _request(method: str, url: str, key: str, body: Any, params: dict[str, Any] | None = None) -> int:
    import httpx

    try:
        response = httpx.request(method, url, json=body, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    except httpx.TransportError as exc:
        raise _unreachable(url, exc) from None
    return _print_answer(response)


def _dlq(args: argparse.Namespace) -> int:
    url, key = _client_settings(args)
    if args.action == "list":
        params = {"channel": args.channel, "notification_id": args.notification, "before": args.before, "limit": args.limit, "cursor": args.cursor}
        return _request("GET", f"{url}/v1/admin/dlq", key, None, {k: v for k, v in params.items() if v is not None})
    selection: dict[str, Any] = {}
    if args.id:
        selection["ids"] = args.id
    if args.channel:
        selection["channel"] = args.channel
    if args.notification:
        selection["notification_id"] = args.notification
    if args.before:
        selection["before"] = args.before
    if args.all:
        selection["all"] = True
    if args.action == "replay":
        return _run_job("POST", f"{url}/v1/admin/dlq/replay", url, key, selection, args.wait, args.json)
    return _run_job("DELETE", f"{url}/v1/admin/dlq", url, key, selection, args.wait, args.json)


JOB_POLL_MAX_S = 1.0  # polls a job at most this far apart
JOB_WAIT_MAX_S = 86_400.0


def _wait_seconds(text: str) -> float:
    """--wait: seconds from 0 to a day."""
    from protocol.parsing import parse_decimal

    value = parse_decimal(text)
    if value is None or not 0 <= value <= JOB_WAIT_MAX_S:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to {JOB_WAIT_MAX_S:g}, got {text!r}")
    return float(value)


def _pause(seconds: float) -> None:
    """Wait between two reads of a job (a function of its own: a test interrupts it)."""
    time.sleep(seconds)


def _progress_console() -> Any:
    """Where a long operation draws its progress: stderr when it is a terminal (else nowhere: None)."""
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else None


def _job_line(job: dict[str, Any]) -> str:
    done = job.get("replayed", 0) if job.get("kind") == "dlq_replay" else job.get("discarded", 0)
    verb = "replayed" if job.get("kind") == "dlq_replay" else "discarded"
    return f"{job.get('kind')} {job.get('state')}: {done} {verb} of {job.get('total', 0)} taken, {job.get('skipped', 0)} skipped, {job.get('errors', 0)} errors"


def _run_job(method: str, start: str, url: str, key: str, body: Any, wait_s: float, quiet: bool = False) -> int:
    """Start a job (202 with its id), follow it until it is done or failed (or `wait_s` passed), print it.

    Its progress is drawn on stderr when that is a terminal (not with --json). Ctrl-C stops
    the following only: the job runs on the node and goes on; the CLI says where to follow it.
    """
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    console = None if quiet else _progress_console()
    progress = None
    where = ""
    try:
        with httpx.Client(headers=headers, timeout=30) as client:
            response = client.request(method, start, json=body)
            if response.status_code != 202:
                return _print_answer(response)
            job, where = response.json(), f"{url}{response.headers['Location']}"
            if console is not None:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                                    transient=True, auto_refresh=False)  # drawn at each read of the job: no refresh thread
                progress.start()
                task = progress.add_task(_job_line(job), total=None)
                progress.refresh()
            deadline, pause = time.monotonic() + wait_s, 0.05
            while job.get("state") in ("queued", "running"):
                if time.monotonic() >= deadline:
                    print(json.dumps(job, indent=2))
                    raise CliError(f"the job is still {job['state']} after {wait_s:g} s: it goes on; follow it at {where}")
                _pause(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(JOB_POLL_MAX_S, pause * 2)
                response = client.get(where)
                if response.status_code != 200:
                    return _print_answer(response)  # 404: the node restarted (the answer says what that means)
                job = response.json()
                if progress is not None:
                    finished = job.get("replayed", 0) + job.get("discarded", 0) + job.get("skipped", 0) + job.get("errors", 0)
                    progress.update(task, description=_job_line(job), completed=finished, total=job.get("total") or None)
                    progress.refresh()
    except httpx.TransportError as exc:
        raise _unreachable(url, exc) from None
    except KeyboardInterrupt:
        if not where:
            raise CliError("interrupted before the node answered: the job may have started (GET /v1/admin/dlq shows what is left)", 130) from None
        raise CliError(f"interrupted: the job goes on on the node; follow it at {where}", 130) from None
    finally:
        if progress is not None:
            progress.stop()
    print(json.dumps(job, indent=2))
    return 0 if job.get("state") == "done" else 1


def _print_answer(response: Any) -> int:
    try:
        print(json.dumps(response.json(), indent=2))
    except ValueError:
        print(response.text)
    return 0 if response.is_success else 1


def _keys(args: argparse.Namespace) -> int:
    """API keys: create (the key is printed once), list, revoke; rotate the token-signing key;
    via the admin API, or --offline on the data dir."""
    if args.action == "create" and not args.scope:
        raise CliError("keys create needs at least one --scope (send, read, admin)", 2)
    if args.action == "revoke" and not args.key_id:
        raise CliError("keys revoke needs a key id", 2)
    if args.offline:
        import msgspec
        import trio

        from .api.keys import offline

        config = _config(args)
        try:
            ok, result = trio.run(lambda: offline(
                config, args.action, scopes=args.scope or (), name=args.name,
                rate_per_s=args.rate, burst=args.burst, key_id=args.key_id or "", retire_previous=args.retire_previous,
            ))
        except ValueError as exc:  # a value the key store refuses (--rate -1): a usage error, as argparse's
            raise CliError(str(exc), 2) from None
        print(json.dumps(msgspec.to_builtins(result), indent=2))
        code = 0 if ok else 1
    else:
        url, key = _client_settings(args)
        if args.action == "create":
            limits = {"rate_per_s": args.rate, "burst": args.burst}
            body = {"scopes": args.scope, "name": args.name, **{k: v for k, v in limits.items() if v is not None}}
            code = _request("POST", f"{url}/v1/admin/keys", key, body)
        elif args.action == "list":
            code = _request("GET", f"{url}/v1/admin/keys", key, None)
        elif args.action == "rotate-secret":
            code = _rotate_secret(url, key, args.retire_previous)
        else:
            code = _request("DELETE", f"{url}/v1/admin/keys/{args.key_id}", key, None)
    if args.action == "create" and code == 0:
        print("herald: the key above is shown only this once; store it now", file=sys.stderr)
    return code


def _rotate_secret(url: str, key: str, retire_previous: bool) -> int:
    """A new signing key through the node; with retire_previous, then retire every other one."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    response = httpx.post(f"{url}/v1/admin/signing-keys", headers=headers, timeout=30)
    for old in response.json()["keys"] if response.is_success and retire_previous else ():
        if not old["current"]:
            response = httpx.delete(f"{url}/v1/admin/signing-keys/{old['kid']}", headers=headers, timeout=30)
            if not response.is_success:
                break
    print(json.dumps(response.json(), indent=2))
    return 0 if response.is_success else 1


def _sandbox_faults(args: argparse.Namespace) -> int:
    """The sandbox providers' faults: show every channel's, set one's (the options given, the rest no fault), clear one's."""
    if args.action != "show" and not args.channel:
        raise CliError(f"sandbox faults {args.action} needs a channel (email, sms, push or webhook)", 2)
    url, key = _client_settings(args)
    if args.action == "show":
        return _request("GET", f"{url}/v1/admin/sandbox/faults", key, None)
    if args.action == "clear":
        return _request("DELETE", f"{url}/v1/admin/sandbox/faults/{args.channel}", key, None)
    options = {
        "error_rate": args.error_rate, "kind": args.kind, "latency_ms": args.latency_ms, "fail_for_s": args.fail_for, "seed": args.seed,
    }
    setting = {k: v for k, v in options.items() if v is not None}
    return _request("PUT", f"{url}/v1/admin/sandbox/faults/{args.channel}", key, setting)


def _circuits(args: argparse.Namespace) -> int:
    url, key = _client_settings(args)
    return _request("GET", f"{url}/v1/admin/circuits", key, None)


def _metrics(args: argparse.Namespace) -> int:
    """The node's /metrics scrape (an admin key), whole or only the families whose names start with --family."""
    import httpx

    url, key = _client_settings(args)
    try:
        response = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    except httpx.TransportError as exc:
        raise _unreachable(url, exc) from None
    if not response.is_success:
        return _print_answer(response)
    prefixes = tuple(args.family or ("",))
    for line in response.text.splitlines():
        name = line.split()[2] if line.startswith("# ") and len(line.split()) > 2 else line
        if name.startswith(prefixes):
            print(line)
    return 0


def _send(args: argparse.Namespace) -> int:
    url, key = _client_settings(args)
    channels = args.channel or ["web"]
    content: dict[str, Any] = {}
    to: dict[str, str] = {}
    for channel in channels:
        if channel == "email":
            content["email"] = {"subject": args.title, "text": args.body}
            if args.email:
                to["email"] = args.email
        elif channel == "sms":
            content["sms"] = {"text": f"{args.title}: {args.body}" if args.body else args.title}
            if args.phone:
                to["phone"] = args.phone
        elif channel == "push":
            content["push"] = {"title": args.title, "body": args.body}
            if args.device_token:
                to["device_token"] = args.device_token
        elif channel == "webhook":
            content["webhook"] = {"title": args.title, "body": args.body}
            if args.webhook:
                to["webhook"] = args.webhook
        else:
            content["web"] = {"title": args.title, "body": args.body}
    body: dict[str, Any] = {"user_id": args.user, "channels": channels, "content": content, "priority": args.priority}
    if to:
        body["to"] = to
    return _request("POST", f"{url}/v1/notifications", key, body)


def _token(args: argparse.Namespace) -> int:
    url, key = _client_settings(args)
    return _request("POST", f"{url}/v1/users/{args.user}/tokens", key, {"ttl_s": args.ttl})


def _listen(args: argparse.Namespace) -> int:
    """Hold a WebSocket for a user: sync, print each frame as a JSON line, ack notifications."""
    import httpx
    import trio
    from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

    url, key = _client_settings(args)
    try:
        response = httpx.post(f"{url}/v1/users/{args.user}/tokens", json={}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    except httpx.TransportError as exc:
        raise _unreachable(url, exc) from None
    if not response.is_success:
        print(response.text, file=sys.stderr)
        return 1
    ws_url = url.replace("http", "ws", 1) + f"/v1/ws?token={response.json()['token']}"

    async def main() -> None:
        seen = 0
        async with open_websocket_url(ws_url) as ws:
            sync: dict[str, Any] = {"type": "sync"}
            if args.last_id:
                sync["last_id"] = args.last_id
            await ws.send_message(json.dumps(sync))

            async def heartbeat() -> None:
                while True:
                    await trio.sleep(25)
                    await ws.send_message('{"type":"ping"}')

            async with trio.open_nursery() as nursery:
                nursery.start_soon(heartbeat)
                try:
                    while args.count is None or seen < args.count:
                        frame = json.loads(await ws.get_message())
                        print(json.dumps(frame), flush=True)
                        if frame.get("type") == "notification":
                            seen += 1
                            await ws.send_message(json.dumps({"type": "ack", "id": frame["id"]}))
                except ConnectionClosed as closed:
                    print(f"herald: connection closed: {closed.reason}", file=sys.stderr)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # trio_websocket's errors may come inside an ExceptionGroup
        cause = next((e for e in leaves(exc) if isinstance(e, (OSError, HandshakeError))), None)
        if cause is None:
            raise
        raise _unreachable(ws_url.partition("?")[0], cause) from None
    return 0


def _tail(args: argparse.Namespace) -> int:
    """Follow the node's notifications live (actors/tail.py): one line per status change, or a JSON line with --json."""
    import httpx
    import trio

    from .tail import TailError, printer, tail

    url, key = _client_settings(args)

    def started() -> None:
        who = " of user " + args.user if args.user else ""
        on = " on " + args.channel if args.channel else ""
        print(f"herald: following the notifications{who}{on} accepted by {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    try:
        trio.run(lambda: tail(url, key, args.user, args.channel, printer(args.json), args.count, started))
    except KeyboardInterrupt:
        return 130
    except TailError as exc:
        raise CliError(str(exc)) from None
    except httpx.TransportError as exc:
        raise _unreachable(url, exc) from None
    return 0


def _providers_check(args: argparse.Namespace) -> int:
    """One line per configured provider; exit 1 if any check failed (actors/clients/checks.py)."""
    import trio

    from protocol.channels import Channel

    from .clients.checks import check_all

    config = _config(args)
    providers = {c: config.providers_of(c) for c in Channel if config.providers_of(c) and args.channel in (None, c.value)}
    if not providers:
        print("no providers configured: every channel sends to its sandbox")
        return 0
    results = trio.run(check_all, providers)
    for result in results:
        print(result.line())
    return 0 if all(r.ok for r in results) else 1


def _webhook_secret(args: argparse.Namespace) -> int:
    """Print the secret(s) a webhook endpoint verifies with: its own with `endpoint_keys`, else the deployment's."""
    from protocol.channels import Channel
    from protocol.webhook_url import url_problem

    from .clients.provider_config import WebhookProvider
    from .clients.webhook import endpoint_secrets

    problem = url_problem(args.url)
    if problem is not None:
        raise CliError(f"url: the URL {problem}")
    specs = [p for p in _config(args).providers_of(Channel.WEBHOOK) if isinstance(p, WebhookProvider)]
    if not specs:
        raise CliError("no webhook provider is configured (HERALD_PROVIDERS, [[herald.providers.webhook]])")
    spec = specs[0]
    if not spec.endpoint_keys:
        print("herald: endpoint_keys is off: every endpoint verifies with the deployment's secret (the provider's "
              "secret_env or secret_file), not printed here", file=sys.stderr)
        return 1
    for line in endpoint_secrets(spec.secrets, args.url):
        print(line)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="herald", description="Herald, a multi-channel notification service")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node with the embedded backends")
    serve.add_argument("--config", type=Path, help="TOML file (HERALD_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument(
        "--role", metavar="{all,api,worker,edge}",  # checked by the configuration (actors/config.py ROLES)
        help="what this node runs (HERALD_ROLE; default all: everything); api, worker and edge need distributed backends",
    )
    serve.add_argument("--json", action="store_true", help="say where it serves as one JSON line ({\"url\", \"api_key_file\"})")
    serve.set_defaults(func=_serve)

    def client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", help="base URL of another node (HERALD_URL; default: the host and port `herald serve` reads)")
        p.add_argument("--api-key", help="API key (HERALD_API_KEY; default: api_key of the config, else <data-dir>/api-key)")
        p.add_argument("--config", type=Path, help="the TOML file `herald serve` reads (HERALD_CONFIG)")
        p.add_argument("--data-dir", help="where `herald serve` keeps its data (HERALD_DATA_DIR; for the API key)")
        p.add_argument("--json", action="store_true",
                       help="JSON only, for scripts: the node's answers as JSON (as by default), no progress bar; tail: JSON lines")

    send = sub.add_parser("send", help="send one notification")
    send.add_argument("--user", required=True)
    send.add_argument("--channel", action="append", choices=["email", "sms", "push", "web", "webhook"])
    send.add_argument("--title", required=True)
    send.add_argument("--body", default="")
    send.add_argument("--email")
    send.add_argument("--phone")
    send.add_argument("--device-token")
    send.add_argument("--webhook", help="the URL to POST to (else the user's contact webhook)")
    send.add_argument("--priority", default="normal", choices=["critical", "high", "normal", "low"])
    client(send)
    send.set_defaults(func=_send)

    token = sub.add_parser("token", help="issue a WebSocket token for a user")
    token.add_argument("--user", required=True)
    token.add_argument("--ttl", type=int, default=3600)
    client(token)
    token.set_defaults(func=_token)

    listen = sub.add_parser("listen", help="hold a WebSocket for a user and print what arrives")
    listen.add_argument("--user", required=True)
    listen.add_argument("--last-id", help="sync from after this notification id")
    listen.add_argument("--count", type=int, help="exit after this many notifications")
    client(listen)
    listen.set_defaults(func=_listen)

    follow = sub.add_parser("tail", help="follow notifications' deliveries and status changes live")
    follow.add_argument("--user", help="only this user's notifications")
    follow.add_argument("--channel", choices=["email", "sms", "push", "web", "webhook"], help="only this channel's steps")
    follow.add_argument("--count", type=int, help="exit after this many steps (default: until Ctrl-C)")
    client(follow)
    follow.set_defaults(func=_tail)

    dlq = sub.add_parser("dlq", help="the dead-letter queue: list, replay, purge")
    dlq.add_argument("action", choices=["list", "replay", "purge"])
    dlq.add_argument("--channel", choices=["email", "sms", "push", "web", "webhook"])
    dlq.add_argument("--id", type=int, action="append", help="an entry id (repeatable)")
    dlq.add_argument("--notification", help="entries of this notification id")
    dlq.add_argument("--before", help="entries dead-lettered before this time (RFC 3339, or milliseconds since the epoch)")
    dlq.add_argument("--all", action="store_true", help="every entry (replay/purge)")
    dlq.add_argument("--limit", type=int, help="list: entries per page")
    dlq.add_argument("--cursor", help="list: continue from this cursor")
    dlq.add_argument(
        "--wait", type=_wait_seconds, default=600.0, metavar="SECONDS",
        help="replay/purge: how long to follow the job before leaving it running (default 600)",
    )
    client(dlq)
    dlq.set_defaults(func=_dlq)

    circuits = sub.add_parser("circuits", help="circuit breaker and rate limit state per channel")
    client(circuits)
    circuits.set_defaults(func=_circuits)

    metrics = sub.add_parser("metrics", help="the node's Prometheus metrics (GET /metrics), or some families of them")
    client(metrics)
    metrics.add_argument("--family", action="append", help="only the families whose names start with this (repeatable)")
    metrics.set_defaults(func=_metrics)

    sandbox = sub.add_parser("sandbox", help="the sandbox providers: make them fail or slow (faults)")
    sandbox_areas = sandbox.add_subparsers(dest="area", required=True)
    faults = sandbox_areas.add_parser(
        "faults", help="show, set or clear a sandbox channel's faults",
        description="Make a sandbox provider fail or slow, to see retries, the breaker and the dead-letter queue at work. "
        "`set` replaces the channel's whole setting: options not given mean no fault of that sort.",
    )
    faults.add_argument("action", choices=["show", "set", "clear"])
    faults.add_argument("channel", nargs="?", choices=["email", "sms", "push", "webhook"], help="set, clear: the channel")
    faults.add_argument("--error-rate", type=float, help="set: the share of calls that fail, 0 to 1")
    faults.add_argument("--kind", choices=["retryable", "permanent"], help="set: what a failed call answers (default retryable)")
    faults.add_argument("--latency-ms", type=float, help="set: added to every call (0 to 10000)")
    faults.add_argument("--fail-for", type=float, metavar="SECONDS", help="set: an outage: every call fails for this long from now")
    faults.add_argument("--seed", type=int, help="set: seeds which calls fail under --error-rate (default 0)")
    client(faults)
    faults.set_defaults(func=_sandbox_faults)

    keys = sub.add_parser("keys", help="API keys: create, list, revoke; rotate-secret: a new token-signing key")
    keys.add_argument("action", choices=["create", "list", "revoke", "rotate-secret"])
    keys.add_argument("key_id", nargs="?", help="revoke: the key's id")
    keys.add_argument("--scope", action="append", choices=["send", "read", "admin"], help="create: a scope (repeatable)")
    keys.add_argument("--name", default="", help="create: a label")
    keys.add_argument("--rate", type=float, help="create: requests per second (default: the node's key_rate_per_s)")
    keys.add_argument("--burst", type=float, help="create: bucket size (default: the node's key_burst)")
    keys.add_argument("--retire-previous", action="store_true",
                      help="rotate-secret: also drop the older signing keys (every token they signed stops working)")
    keys.add_argument("--offline", action="store_true",
                      help="work on the data dir directly, not through the server (rotate-secret: with the node stopped)")
    client(keys)
    keys.set_defaults(func=_keys)

    providers = sub.add_parser("providers", help="the configured providers (HERALD_PROVIDERS, [[herald.providers.<channel>]])")
    provider_actions = providers.add_subparsers(dest="action", required=True)
    check = provider_actions.add_parser(
        "check", help="check each configured provider's credentials and connectivity where its API allows (nothing is sent)")
    check.add_argument("--config", type=Path, help="the TOML file `herald serve` reads (HERALD_CONFIG)")
    check.add_argument("--channel", choices=["email", "sms", "push", "webhook"], help="only this channel's providers")
    check.set_defaults(func=_providers_check)
    secret = provider_actions.add_parser(
        "webhook-secret", help="the whsec_ secret an endpoint verifies Herald's POSTs with (one per key while rotating)")
    secret.add_argument("url", help="the endpoint's URL, exactly as in the user's contact.webhook or a send's to.webhook")
    secret.add_argument("--config", type=Path, help="the TOML file `herald serve` reads (HERALD_CONFIG)")
    secret.set_defaults(func=_webhook_secret)

    from .check import add_parser as add_check  # herald check properties (actors/check.py)

    add_check(sub)
    from .simulate.command import add_parser as add_simulate  # herald simulate SCENARIO.toml (actors/simulate/)

    add_simulate(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as error:
        print(f"herald: {error}", file=sys.stderr)
        return error.code
    except (CheckError, SimulateError) as error:
        print(f"herald: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_dependency(exc)
        if message is None:
            raise
        print(f"herald: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
