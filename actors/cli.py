"""The `herald` command: serve a node, send a notification, issue a subscriber token, listen."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import trio

from .auth import API_KEY_FILE
from .config import ConfigError, load_config


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, host=args.host, port=args.port, data_dir=args.data_dir)
    except (ConfigError, OSError) as exc:
        print(f"herald: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .app import run_herald

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            herald = await nursery.start(run_herald, config)
            key_file = config.data_dir / API_KEY_FILE  # written by the node, 0600 from its creation
            print(f"herald: serving on {herald.url}", flush=True)
            print(f"herald: API key in {key_file.resolve()}", flush=True)
            print(f"herald: email outbox {config.outbox_dir.resolve()}", flush=True)
            print(f"herald: sms and push in {(config.data_dir / 'sms.jsonl').resolve()}, {(config.data_dir / 'push.jsonl').resolve()}", flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 130
    return 0


def _client_settings(args: argparse.Namespace) -> tuple[str, str]:
    url = args.server or os.environ.get("HERALD_URL", "http://127.0.0.1:8080")
    key = args.api_key or os.environ.get("HERALD_API_KEY")
    if not key:
        key_file = Path(args.data_dir or os.environ.get("HERALD_DATA_DIR", "herald-data")) / API_KEY_FILE
        if not key_file.exists():
            raise SystemExit(f"herald: no API key: pass --api-key, set HERALD_API_KEY, or run where {key_file} exists")
        key = key_file.read_text().strip()
    return url.rstrip("/"), key


def _request(method: str, url: str, key: str, body: Any, params: dict[str, Any] | None = None) -> int:
    import httpx

    response = httpx.request(method, url, json=body, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    print(json.dumps(response.json(), indent=2))
    return 0 if response.is_success else 1


def _dlq(args: argparse.Namespace) -> int:
    url, key = _client_settings(args)
    if args.action == "list":
        params = {"channel": args.channel, "limit": args.limit, "cursor": args.cursor}
        return _request("GET", f"{url}/v1/admin/dlq", key, None, {k: v for k, v in params.items() if v is not None})
    selection: dict[str, Any] = {}
    if args.id:
        selection["ids"] = args.id
    if args.channel:
        selection["channel"] = args.channel
    if args.notification:
        selection["notification_id"] = args.notification
    if args.all:
        selection["all"] = True
    if args.action == "replay":
        return _request("POST", f"{url}/v1/admin/dlq/replay", key, selection)
    return _request("DELETE", f"{url}/v1/admin/dlq", key, selection)


def _keys(args: argparse.Namespace) -> int:
    """API keys: create (the key is printed once), list, revoke; rotate the token-signing key;
    via the admin API, or --offline on the data dir."""
    if args.action == "create" and not args.scope:
        raise SystemExit("herald: keys create needs at least one --scope (send, read, admin)")
    if args.action == "revoke" and not args.key_id:
        raise SystemExit("herald: keys revoke needs a key id")
    if args.offline:
        import msgspec

        from .api.keys import offline

        data_dir = Path(args.data_dir or os.environ.get("HERALD_DATA_DIR", "herald-data"))
        try:
            ok, result = trio.run(lambda: offline(
                data_dir, load_config(data_dir=data_dir), args.action, scopes=args.scope or (), name=args.name,
                rate_per_s=args.rate, burst=args.burst, key_id=args.key_id or "", retire_previous=args.retire_previous,
            ))
        except (ConfigError, ValueError) as exc:
            raise SystemExit(f"herald: {exc}") from None
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


def _circuits(args: argparse.Namespace) -> int:
    url, key = _client_settings(args)
    return _request("GET", f"{url}/v1/admin/circuits", key, None)


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
    from trio_websocket import ConnectionClosed, open_websocket_url

    url, key = _client_settings(args)
    response = httpx.post(f"{url}/v1/users/{args.user}/tokens", json={}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
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
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="herald", description="Herald, a multi-channel notification service")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a node with the embedded backends")
    serve.add_argument("--config", type=Path, help="TOML file (HERALD_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", type=Path)
    serve.set_defaults(func=_serve)

    def client(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", help="base URL (HERALD_URL, default http://127.0.0.1:8080)")
        p.add_argument("--api-key", help="API key (HERALD_API_KEY, else <data-dir>/api-key)")
        p.add_argument("--data-dir", help="where `herald serve` keeps its data (for the API key)")

    send = sub.add_parser("send", help="send one notification")
    send.add_argument("--user", required=True)
    send.add_argument("--channel", action="append", choices=["email", "sms", "push", "web"])
    send.add_argument("--title", required=True)
    send.add_argument("--body", default="")
    send.add_argument("--email")
    send.add_argument("--phone")
    send.add_argument("--device-token")
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

    dlq = sub.add_parser("dlq", help="the dead-letter queue: list, replay, purge")
    dlq.add_argument("action", choices=["list", "replay", "purge"])
    dlq.add_argument("--channel", choices=["email", "sms", "push", "web"])
    dlq.add_argument("--id", type=int, action="append", help="an entry id (repeatable)")
    dlq.add_argument("--notification", help="entries of this notification id")
    dlq.add_argument("--all", action="store_true", help="every entry (replay/purge)")
    dlq.add_argument("--limit", type=int, help="list: entries per page")
    dlq.add_argument("--cursor", help="list: continue from this cursor")
    client(dlq)
    dlq.set_defaults(func=_dlq)

    circuits = sub.add_parser("circuits", help="circuit breaker and rate limit state per channel")
    client(circuits)
    circuits.set_defaults(func=_circuits)

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
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
