"""Run both partner sandboxes until SIGINT/SIGTERM: `python -m devtools.sandboxes --help`.

`--ready-file` lets another process start the sandboxes on port 0 and learn the ports without parsing
stdout: the file appears (written atomically) only once both are listening, and is removed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from . import TraedeSandbox, WallieSandbox


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.sandboxes", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--wallie-port", type=int, default=8071)
    parser.add_argument("--traede-port", type=int, default=8072)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0,
                        help="add a random 0..N ms to each request's latency (seeded by --seed)")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on injected 429s")
    parser.add_argument("--seed", type=int, default=0, help="seed for the fault draws")
    parser.add_argument("--slow-rate", type=float, default=0.0,
                        help="share of requests that sit 0..--slow-ms before they are applied (a partner slower "
                             "than the client waits: it applies the request after the client gave up)")
    parser.add_argument("--slow-ms", type=float, default=0.0)
    parser.add_argument("--token-lifetime", type=float, default=3600.0, help="Wallie token lifetime in seconds")
    parser.add_argument("--no-download", action="store_true", help="do not download the image URLs sent")
    parser.add_argument("--wallie-tenant", default="TENANT")
    parser.add_argument("--wallie-username", default="wallie-user")
    parser.add_argument("--wallie-password", default="wallie-pass")
    parser.add_argument("--traede-access-token", default="traede-token")
    parser.add_argument("--traede-app-key", default="traede-app-key")
    parser.add_argument("--traede-payload-key", default="products")
    parser.add_argument("--ready-file", type=Path, help='write {"wallie": url, "traede": url} here once listening')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    download = not args.no_download
    wallie = WallieSandbox(
        tenant=args.wallie_tenant,
        username=args.wallie_username,
        password=args.wallie_password,
        token_lifetime=args.token_lifetime,
        host=args.host,
        port=args.wallie_port,
        download=download,
    )
    traede = TraedeSandbox(
        access_token=args.traede_access_token,
        app_key=args.traede_app_key,
        payload_key=args.traede_payload_key,
        host=args.host,
        port=args.traede_port,
        download=download,
    )
    try:
        for sandbox in (wallie, traede):
            sandbox.configure_faults(
                latency_ms=args.latency_ms,
                latency_jitter_ms=args.latency_jitter_ms,
                error_rate=args.error_rate,
                throttle_rate=args.throttle_rate,
                retry_after=args.retry_after,
                seed=args.seed,
            )
        traede.configure_faults(slow_rate=args.slow_rate, slow_ms=args.slow_ms)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    if args.ready_file:
        args.ready_file.unlink(missing_ok=True)  # a stale file would point at dead ports
    try:
        try:
            wallie.start()
            traede.start()
        except OSError as exc:
            print(f"error: cannot listen on {args.host}: {exc}", file=sys.stderr)
            return 2
        print(f"wallie sandbox: {wallie.url}  X-Tenant={wallie.tenant} username={wallie.username} "
              f"password={wallie.password} (fake credentials)", flush=True)
        print(f"traede sandbox: {traede.url}  Bearer {traede.access_token}  X-Traede-App-Key={traede.app_key} "
              f"payload key={traede.payload_key!r} (fake credentials)", flush=True)
        if args.ready_file:
            partial = args.ready_file.with_name(args.ready_file.name + ".tmp")
            partial.write_text(json.dumps({"wallie": wallie.url, "traede": traede.url}))
            os.replace(partial, args.ready_file)
        while not stop.wait(0.2):
            pass
    finally:
        wallie.stop()
        traede.stop()
        if args.ready_file:
            args.ready_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
