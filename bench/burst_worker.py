"""One Functions instance of the burst benchmark: ``python -m bench.burst_worker`` (settings from the env).

Reads blob names from stdin, one per line, and runs the blob trigger's work for each on ``--parallel``
threads (the host's ``maxDegreeOfParallelism``), retrying a failed invocation up to 5 times as the host
does. With ``--queue NAME`` it also runs the product queue trigger through ``devtools.queue_host``, as the
host would on the same instance. On stdin's end it finishes the uploads it has, keeps serving the queue
until SIGTERM, then prints one JSON line of counters.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HOST_ATTEMPTS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst_worker")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--queue", help="also serve this queue with the product_sync function")
    parser.add_argument("--visibility", type=int, default=30,
                        help="seconds a received message stays invisible (a crashed instance's message reappears)")
    args = parser.parse_args(argv)

    from shared.app import jobs

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counts = {"invocations": 0, "failed_invocations": 0, "gave_up": 0}
    lock = threading.Lock()

    def trigger(name: str) -> None:
        for attempt in range(1, HOST_ATTEMPTS + 1):
            with lock:
                counts["invocations"] += 1
            try:
                report = jobs.new_image(name)
                if any(p.retryable for p in report.failed):  # the host retries what a retry may cure
                    raise RuntimeError(report.summary())
                return
            except Exception:  # noqa: BLE001 - the host retries any failure
                with lock:
                    counts["failed_invocations"] += 1
                time.sleep(0.2 * attempt)
        with lock:
            counts["gave_up"] += 1

    jobs.components()  # an instance that already runs: settings read, parts built
    print("ready", flush=True)
    host = None
    if args.queue:
        import os

        from devtools.queue_host import QueueHost
        from functions.product_sync import product_sync

        def serve(message: object) -> None:
            """The product_sync function, counting the resends (a request's outcome was unknown)."""
            if b'"resend":true' in message.get_body():  # type: ignore[attr-defined]
                with lock:
                    counts["resend_invocations"] += 1
            product_sync(message)  # type: ignore[arg-type]

        counts["resend_invocations"] = 0
        host = QueueHost(os.environ["IMAGES_STORAGE"], args.queue, serve, visibility_timeout=args.visibility).start()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for line in sys.stdin:
            if line.strip():
                pool.submit(trigger, line.rstrip("\n"))
    print("idle", file=sys.stderr, flush=True)
    stop.wait()
    if host is not None:
        host.stop()
        counts.update({f"queue_{k}": v for k, v in host.stats().items()})
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
