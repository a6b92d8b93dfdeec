"""What one provider request costs the client, per transport of actors/clients/http_api.py: CPU per request.

    .venv/bin/python loadtests/http_client_bench.py [--requests 10000] [--concurrency 256] [--delay-ms 100]

A server process (Hypercorn, its CPU not counted) answers every POST with a small JSON
body after `--delay-ms`, on plain HTTP/1.1 and on TLS offering h2 and http/1.1 (a
throwaway CA, trusted through the client's ca_file as an operator's private CA would be).
The client (this process) sends `--requests` POSTs, `--concurrency` at a time, through
`http_api.call` as the provider clients do, on each transport:

* h1: HTTP/1.1 keep-alive pool (actors/clients/http1.py), plain TCP (the Twilio and SendGrid path; their APIs are TLS);
* h1+tls: the same over TLS;
* h2+tls: the HTTP/2 pool (actors/clients/http2.py; the FCM and APNs path), requests multiplexed on a few connections.

Each line: requests answered, wall seconds, the client's CPU seconds (`time.process_time`:
user + system of this process) and CPU per request, requests per CPU second. The machine's
load average is printed first: on a shared machine, CPU per request is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = b'{"name":"projects/bench/messages/0:1234567890"}'


async def serve(delay_s: float, tls_dir: Path) -> None:
    """Two Hypercorn servers (plain; TLS with h2), answering every request after delay_s; prints both ports."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        while (await receive()).get("more_body"):
            pass
        await trio.sleep(delay_s)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})

    ports = []
    async with trio.open_nursery() as nursery:
        for tls in (False, True):
            config = Config()
            config.bind = ["127.0.0.1:0"]
            config.accesslog = None
            config.backlog = 4096
            config.keep_alive_timeout = 600
            config.keep_alive_max_requests = 10**9  # Hypercorn closes a connection after 1,000 by default (a GOAWAY in HTTP/2)
            if tls:
                config.certfile, config.keyfile = str(tls_dir / "server.pem"), str(tls_dir / "server.key")
            binds = await nursery.start(lambda task_status, c=config: hypercorn_serve(app, c, task_status=task_status))  # type: ignore[arg-type]
            ports.append(binds[0].rsplit(":", 1)[1])
        print(" ".join(ports), flush=True)


async def measure(transport: str, port: int, ca_file: Path, requests: int, concurrency: int) -> dict[str, float]:
    from actors.clients.http_api import call, http_client
    from actors.clients.http_errors import TransportError

    http2 = transport == "h2+tls"
    scheme = "http" if transport == "h1" else "https"
    http = http_client(30.0, concurrency, ca_file, http2=http2)
    url = f"{scheme}://127.0.0.1:{port}/v1/projects/bench/messages:send"
    body = {"message": {"token": "t" * 140, "notification": {"title": "Code", "body": "1234"}, "data": {"k": "v"}}}
    headers = {"Authorization": "Bearer " + "a" * 200}
    versions: set[str] = set()
    errors: set[str] = set()
    failed = 0

    async def warm() -> None:  # connections opened (and TLS handshakes done) before the measured part
        nonlocal failed
        try:
            await call(http, "POST", url, json=body, headers=headers)
        except TransportError as exc:
            failed += 1
            errors.add(f"{type(exc).__name__}: {exc}"[:120])

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(warm)
    limiter = trio.Semaphore(concurrency)

    async def one() -> None:
        nonlocal failed
        try:
            answer = await call(http, "POST", url, json=body, headers=headers)
            versions.add(answer.http_version)
            failed += answer.status != 200
        except TransportError as exc:
            failed += 1
            errors.add(f"{type(exc).__name__}: {exc}"[:120])
        finally:
            limiter.release()

    warm_failed, failed = failed, 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(requests):
            await limiter.acquire()
            nursery.start_soon(one)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    await http.aclose()
    return {"wall_s": wall, "cpu_s": cpu, "failed": failed, "warm_failed": warm_failed,  # type: ignore[dict-item]
            "versions": ",".join(sorted(versions)), "errors": "; ".join(sorted(errors))[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--delay-ms", type=float, default=100.0)
    parser.add_argument("--transports", default="h1,h1+tls,h2+tls")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of each transport's run to PATH.<transport>")
    parser.add_argument("--server", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server is not None:
        trio.run(serve, args.delay_ms / 1000, args.server)
        return
    import trustme

    with tempfile.TemporaryDirectory(prefix="herald-http-bench-") as tmp:
        tls_dir = Path(tmp)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        ca.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
        cert.private_key_and_cert_chain_pem.write_to_path(str(tls_dir / "server.pem"))
        cert.private_key_pem.write_to_path(str(tls_dir / "server.key"))
        server = subprocess.Popen([sys.executable, __file__, "--server", str(tls_dir), "--delay-ms", str(args.delay_ms)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            plain, tls = (int(p) for p in server.stdout.readline().split())
            print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.requests} requests, "
                  f"{args.concurrency} at a time, answered after {args.delay_ms:g} ms", flush=True)
            for transport in args.transports.split(","):
                port = plain if transport == "h1" else tls
                run = (trio.run, measure, transport, port, tls_dir / "ca.pem", args.requests, args.concurrency)
                if args.profile is not None:
                    import cProfile

                    profiler = cProfile.Profile()
                    r = profiler.runcall(*run)
                    profiler.dump_stats(f"{args.profile}.{transport}")
                else:
                    r = run[0](*run[1:])
                print(f"{transport:7s} ({r['versions']}): {args.requests} in {r['wall_s']:.2f} s "
                      f"({args.requests / r['wall_s']:,.0f}/s), CPU {r['cpu_s']:.2f} s: "
                      f"{1000 * r['cpu_s'] / args.requests:.3f} ms per request, {args.requests / r['cpu_s']:,.0f} per CPU second"
                      + (f", {r['failed']:.0f} failed: {r['errors']}" if r["failed"] else "")
                      + (f" (warm-up: {r['warm_failed']:.0f} failed: {r['errors']})" if r["warm_failed"] else ""), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
