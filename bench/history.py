"""The run history at size: ``python -m bench.history --runs 5000``.

A day of thousands of uploads keeps thousands of runs. This keeps ``--runs`` runs in a fresh history container
of a throwaway Azurite, spread evenly over one UTC day (one in ``--failed-every`` failed), each kept by
``RunHistory.save`` as the app keeps it (report under its hour, the ``failed/`` marker, ``index/latest``), then
counts every storage request the reads make (a policy on the SDK client: each request, and the bytes of each
answer) and times them, ``--repeat`` times (median and spread):

- **before** (the history before issue 24): ``runs`` and ``latest`` listed the whole day's reports with their
  metadata and took the newest (``runs/YYYY/MM/DD/``, 5,000 blobs a page). The same listing, of the same
  blobs, is measured here: a listing of the day's prefix returns the reports under every hour.
- **after**: ``resolve("latest")`` (``runs sheet latest``: ``index/latest`` and a HEAD of its report),
  ``load("latest")`` (``runs show latest``), ``recent(20)`` (``runs``: the day's hours, then the newest hours
  until 20 runs are found), ``recent(20, failed=True)`` (``runs --failed``: the day's ``failed/`` markers) and
  ``resolve("latest")`` after the pointer was deleted (the repair: the newest hour listed, the pointer written
  again; the next read is back to two requests).

Prints a table, then one JSON line. No partner is involved.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any


class Counter:
    """Counts the requests a storage client sends and the bytes of the answers (the SDK's raw request and
    response hooks: every request that goes on the wire, retries included)."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def on_request(self, request: Any) -> None:
        http = request.http_request
        with self._lock:
            self.requests += 1
            self.lines.append(f"{http.method} {http.url}")  # (shared-key auth: no signature in the address)

    def on_response(self, response: Any) -> None:
        http = response.http_response
        length = http.headers.get("Content-Length")
        if http.request.method == "HEAD":
            size = 0  # (its Content-Length is the blob's, not the answer's)
        elif length and length.isdigit():
            size = int(length)
        elif http.request.method != "GET" or "comp=list" not in http.request.url:
            size = 0
        else:  # a listing's answer comes chunked (no Content-Length), and whole: its body is read already
            size = len(http.body())
        with self._lock:
            self.bytes += size

    def reset(self) -> None:
        with self._lock:
            self.requests, self.bytes, self.lines = 0, 0, []


def counted_service(connection_string: str) -> tuple[Any, Counter]:
    from azure.storage.blob import BlobServiceClient

    counter = Counter()
    return BlobServiceClient.from_connection_string(connection_string, raw_request_hook=counter.on_request,
                                                    raw_response_hook=counter.on_response), counter


def keep_runs(service: Any, container: str, runs: int, *, day: datetime, failed_every: int = 20,
              workers: int = 8) -> list[str]:
    """Keep ``runs`` runs through ``RunHistory.save``, spread evenly over ``day`` (UTC), oldest first; every
    ``failed_every``-th one failed. Returns their ids, oldest first."""
    from shared.domain import Partner
    from shared.runs.history import RunHistory
    from shared.runs.names import new_run_id
    from shared.runs.report import Problem, SyncReport

    service.get_container_client(container).create_container()
    history = RunHistory(service, container, days=30, clock=lambda: day + timedelta(days=1) - timedelta(seconds=1))
    step = timedelta(days=1) / runs
    ids = [new_run_id("upload" if n % 50 else "product", day + n * step) for n in range(runs)]

    def keep(n: int) -> None:
        report = SyncReport(mode="image", queued=[f"{100000 + n % 997}"], context={"container": "bench"})
        if failed_every and n % failed_every == failed_every - 1:
            report.add_failed(Problem(Partner.TRAEDE, f"{100000 + n % 997}", None, "HTTP 503 (bench)"))
        history.save(report.finish(), None, kind=ids[n].split("-")[1], run_id=ids[n])

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(keep, range(runs), chunksize=16):
            pass
    return ids


def measure(counter: Counter, action: Callable[[], Any], repeat: int) -> dict[str, Any]:
    """Requests, bytes and seconds of ``action``, each of ``repeat`` runs; the figures of the median run."""
    runs = []
    for _ in range(repeat):
        counter.reset()
        started = time.perf_counter()
        action()
        runs.append({"s": round(time.perf_counter() - started, 4), "requests": counter.requests,
                     "kb": round(counter.bytes / 1024, 1)})
    seconds = sorted(r["s"] for r in runs)
    return {"requests": runs[-1]["requests"], "kb": runs[-1]["kb"], "s": round(statistics.median(seconds), 4),
            "spread_s": [seconds[0], seconds[-1]]}


def bench(connection_string: str, runs: int, *, repeat: int, failed_every: int) -> dict[str, Any]:
    from shared.runs.history import RunHistory, RunSummary
    from shared.runs.names import RUNS, day_of

    service, counter = counted_service(connection_string)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    container = f"bench-history-{runs}-{int(time.time())}"
    started = time.monotonic()
    ids = keep_runs(service, container, runs, day=day, failed_every=failed_every)
    seed_s = time.monotonic() - started
    history = RunHistory(service, container, days=30, clock=lambda: day + timedelta(days=1) - timedelta(seconds=1))
    client = history.client

    def before(limit: int) -> list[str]:
        blobs = client.list_blobs(name_starts_with=f"{RUNS}{day_of(day)}/", include=["metadata"])
        found = sorted((RunSummary.from_metadata(b.name.rsplit("/", 1)[-1][:-len(".json")], b.metadata)
                        for b in blobs if b.name.endswith(".json")), key=lambda r: r.run_id, reverse=True)
        return [r.run_id for r in found[:limit]]

    assert before(1) == [ids[-1]], "the full listing did not find the newest run"
    assert history.resolve("latest") == ids[-1] and [r.run_id for r in history.recent(20)] == ids[::-1][:20]

    figures: dict[str, Any] = {
        "before_latest": measure(counter, lambda: before(1), repeat),
        "before_runs_20": measure(counter, lambda: before(20), repeat),
        "after_latest": measure(counter, lambda: history.resolve("latest"), repeat),
        "after_show_latest": measure(counter, lambda: history.load("latest"), repeat),
        "after_runs_20": measure(counter, lambda: history.recent(20), repeat),
        "after_runs_failed_20": measure(counter, lambda: history.recent(20, failed=True), repeat),
    }
    # the repair: the pointer deleted before each run (that delete is not counted)
    repairs = []
    for _ in range(repeat):
        history.pointer.blob.delete_blob()
        counter.reset()
        t0 = time.perf_counter()
        assert history.resolve("latest") == ids[-1]
        repairs.append({"s": time.perf_counter() - t0, "requests": counter.requests, "kb": counter.bytes / 1024})
    figures["after_latest_repair"] = {"requests": repairs[-1]["requests"], "kb": round(repairs[-1]["kb"], 1),
                                      "s": round(statistics.median(r["s"] for r in repairs), 4),
                                      "spread_s": [round(min(r["s"] for r in repairs), 4),
                                                   round(max(r["s"] for r in repairs), 4)]}
    figures["after_latest_repaired"] = measure(counter, lambda: history.resolve("latest"), 1)
    service.delete_container(container)
    service.close()
    return {"runs": runs, "failed_every": failed_every, "repeat": repeat, "seed_s": round(seed_s, 1), **figures}


ROWS = (("before_latest", "before: newest run (whole day listed)"),
        ("before_runs_20", "before: runs (20 newest; whole day listed)"),
        ("after_latest", "after: latest (index/latest + HEAD)"),
        ("after_show_latest", "after: runs show latest (index + report)"),
        ("after_runs_20", "after: runs (20 newest; newest hours)"),
        ("after_runs_failed_20", "after: runs --failed (failed/ markers)"),
        ("after_latest_repair", "after: latest, pointer missing (repair)"),
        ("after_latest_repaired", "after: latest, once repaired"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5000, help="runs kept today (default 5000)")
    p.add_argument("--failed-every", type=int, default=20, help="one run in N failed (default 20)")
    p.add_argument("--repeat", type=int, default=5, help="measure each read N times (median, spread)")
    args = p.parse_args(argv)
    from devtools.azurite import Azurite

    with Azurite() as azurite:
        figures = bench(azurite.connection_string, args.runs, repeat=args.repeat, failed_every=args.failed_every)
    print(f"{args.runs} runs kept in one day (seeded in {figures['seed_s']} s); median of {args.repeat}")
    print(f"{'':<46}{'requests':>9}{'KB read':>10}{'ms':>9}")
    for key, label in ROWS:
        f = figures[key]
        print(f"{label:<46}{f['requests']:>9}{f['kb']:>10}{f['s'] * 1000:>9.1f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
