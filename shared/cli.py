"""The operator CLI: ``python -m shared sync [--item ID ...] [--dry-run] [--report PATH]`` and ``doctor``.

Exit codes: 0 everything delivered, 1 a record was rejected or failed after retries, 2 configuration error.
``doctor`` exits 1 when any check fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import Sequence, TextIO

from . import redact
from .errors import ConfigError, ImageSyncError
from .factory import Components
from .report import SyncReport
from .settings import Settings

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("shared.cli")


class DryRunOutput:
    """A stand-in partner that prints what would be sent, one JSON object per line."""

    def __init__(self, name: str, batch_size: int, out: TextIO):
        self.name = name
        self.batch_size = batch_size
        self.out = out
        self._lock = threading.Lock()

    def send_images(self, records: list[dict], guard=None) -> None:
        self._write([{"partner": "wallie", "record": r} for r in records])

    def sync_products(self, products: list[dict], guard=None) -> None:
        self._write([{"partner": "traede", "product": p} for p in products])

    def _write(self, objects: list[dict]) -> None:
        text = "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects)
        with self._lock:
            self.out.write(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m shared", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sync = sub.add_parser("sync", help="sync images to the configured partners")
    sync.add_argument("--item", action="append", metavar="ID", help="only this product (repeatable)")
    sync.add_argument("--dry-run", action="store_true",
                      help="print what would be sent (one JSON object per line); call no partner")
    sync.add_argument("--report", metavar="PATH", help="also write the run report as JSON to PATH")
    flush = sub.add_parser("flush", help="send every pending product to TRAEDE now, without waiting for "
                                         "PRODUCT_SYNC_DELAY_SECONDS (uploads and deletes queue their product)")
    flush.add_argument("--list", action="store_true", help="only list the pending products; send nothing")
    sub.add_parser("doctor", help="check settings, storage, a SAS download and both partners' credentials; "
                                  "one line per check, exit 1 if any fails")
    return parser


def main(argv: Sequence[str] | None = None, *, env=None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        from . import doctor

        try:
            _configure_logging(Settings.from_env(env), stderr)
        except ConfigError:
            pass  # doctor's own first line names the bad setting
        return doctor.main(env, stdout)
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_CONFIG
    _configure_logging(settings, stderr)
    if args.command == "sync":
        return _sync(args, settings, stdout, stderr)
    if args.command == "flush":
        return _flush(args, settings, stdout, stderr)
    return EXIT_CONFIG  # pragma: no cover - argparse rejects unknown commands


def _sync(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    targets = {}
    if args.dry_run:
        batch = settings.wallie.batch_size if settings.wallie else 500
        targets = {"wallie": DryRunOutput("wallie", batch, stdout), "traede": DryRunOutput("traede", 10, stdout)}
    progress = _progress_printer(stderr) if stderr.isatty() and not args.dry_run else None
    def waiting(line: str) -> None:
        print(line, file=stderr, flush=True)

    try:
        with Components(settings, progress=progress, **targets) as parts:
            if args.dry_run:
                report = parts.engine.full_sync(args.item, dry_run=True)
            elif args.item and parts.engine.traede:
                report = parts.products.sync_now(args.item, on_wait=waiting)
            else:
                with parts.products.full_sync_unit("CLI sync", wait_seconds=float("inf"), on_wait=waiting) as unit:
                    report = parts.engine.full_sync(args.item, withhold=unit.withhold, track=unit.pending)
                    unit.settle(report)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_CONFIG
    except ImageSyncError as exc:
        print(redact.redact(f"sync failed: {exc}", settings.secrets()), file=stderr)
        return EXIT_PROBLEMS
    if progress:
        stderr.write("\n")
    _print_report(report, stderr, settings.secrets())
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2, ensure_ascii=False)
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _flush(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    try:
        with Components(settings) as parts:
            if args.list:
                pending = parts.products.pending()
                for item, age in sorted(pending.items()):
                    print(f"{item}\tpending for {age:.0f} s", file=stdout)
                print(f"{len(pending)} products pending", file=stderr)
                return EXIT_OK
            report = parts.products.flush(on_wait=lambda line: print(line, file=stderr, flush=True))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=stderr)
        return EXIT_CONFIG
    except ImageSyncError as exc:
        print(redact.redact(f"flush failed: {exc}"), file=stderr)
        return EXIT_PROBLEMS
    _print_report(report, stderr, settings.secrets())
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _print_report(report: SyncReport, stderr: TextIO, secrets: Sequence[str] = ()) -> None:
    """Printed, not logged: the log filter does not see these lines, so they are redacted here."""
    lines = [f"skipped: {s.blob_name!r}: {s.reason}" for s in report.skipped]
    lines += [f"rejected: {p.line()}" for p in report.rejected]
    lines += [f"failed: {p.line()}" for p in report.failed]
    for line in lines + [report.summary()]:
        print(redact.redact(line, secrets), file=stderr)


def _progress_printer(stream: TextIO):
    lock = threading.Lock()

    def show(report: SyncReport) -> None:
        with lock:
            d = report.delivered
            stream.write(f"\r{report.images} images listed, wallie {d.get('wallie', 0)}, "
                         f"traede {d.get('traede', 0)} delivered ")
            stream.flush()
    return show


def _configure_logging(settings: Settings, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    redact.install(handler, settings.secrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("shared").setLevel(settings.log_level)
