"""The operator CLI: ``python -m shared sync [--item ID ...] [--dry-run] [--report PATH]``, ``flush`` and
``doctor``.

Exit codes: 0 everything delivered, 1 a record was rejected or failed after retries, 2 configuration error,
130/143 stopped by SIGINT/SIGTERM (128 + the signal: the summary and the report say what was not sent).
``doctor`` exits 1 when any check fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from typing import Any, Sequence, TextIO

from . import redact
from .errors import ConfigError, ImageSyncError
from .factory import Components
from .report import SyncReport
from .settings import Settings
from .stopping import Stopper
from .traede import TraedeClient
from .wallie import WallieClient

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2
log = logging.getLogger("shared.cli")


class DryRunOutput:
    """Stands in for a partner client (same name, unit and batch size) and prints what would be sent, one
    JSON object per line: ``{"partner": ..., "record": ...}`` or ``{"partner": ..., "product": ...}``."""

    def __init__(self, like: Any, batch_size: int, out: TextIO):
        self.name = like.name
        self.unit = like.unit
        self.batch_size = batch_size
        self.out = out
        self._key = "product" if like.unit == "products" else "record"
        self._lock = threading.Lock()

    def send(self, payloads: list[dict], guard: Any = None) -> None:
        text = "".join(json.dumps({"partner": self.name, self._key: p}, ensure_ascii=False) + "\n"
                       for p in payloads)
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
        targets = {"wallie": DryRunOutput(WallieClient, batch, stdout),
                   "traede": DryRunOutput(TraedeClient, TraedeClient.batch_size, stdout)}
    progress = _progress_printer(stderr) if stderr.isatty() and not args.dry_run else None

    def waiting(line: str) -> None:
        print(line, file=stderr, flush=True)

    stopper = Stopper()
    stopper.install()
    try:
        with Components(settings, progress=progress, stop=stopper.stop, **targets) as parts:
            stopper.on_abort(parts.abort)
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
    finally:
        stopper.uninstall()
    if progress:
        stderr.write("\n")
    if stopper.stop.is_set():
        report.interrupted = stopper.stop.reason
    _print_report(report, stderr, settings.secrets())
    if args.report:
        with open(args.report, "w", encoding="utf-8") as fh:
            json.dump(redact.redact_tree(report.to_dict()), fh, indent=2, ensure_ascii=False)
    if report.interrupted:
        return stopper.exit_code
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
    """One line per cause, then the summary. Printed, not logged: the log filter does not see these
    lines, so they are redacted here."""
    for line in report.grouped_lines() + [report.summary()]:
        print(redact.redact(line, secrets), file=stderr)


def _progress_printer(stream: TextIO):
    lock = threading.Lock()

    def show(report: SyncReport) -> None:
        with lock:
            sent = ", ".join(f"{name} {count}" for name, count in report.delivered.items())
            stream.write(f"\r{report.images} images listed, {sent} delivered ")
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
