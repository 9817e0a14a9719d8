"""The operator CLI, ``image-sync`` (also ``python -m shared``): sync, flush, doctor and runs.

Every mistake gets one line that names the setting or option and what is expected; configuration errors
are found before any work starts.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from .. import redact
from ..config.settings import Settings
from ..coordination.product_queue import DEFAULT_WAIT_SECONDS, FullSyncBusy
from ..domain import Partner
from ..engine.progress import Progress, progress_line
from ..engine.stopping import Stopper
from ..engine.target import Guard, Target
from ..errors import ConfigError, ImageSyncError
from ..partners.traede import TraedeClient
from ..runs.ledger import write_report
from ..runs.recording import Recording
from ..runs.report import SyncReport
from ..storage.clients import StorageUnreachable, check_container
from . import runs_cli
from .factory import Components
from .output import EXIT_BUSY, EXIT_CONFIG, EXIT_OK, EXIT_PROBLEMS, path_problem, printable

log = logging.getLogger(__name__)


EPILOG = """\
exit codes:
  0    everything delivered
  1    a record was rejected or failed after retries, a product asked for by --item has no image,
       or storage could not be reached (each is named on stderr, one line per cause)
  2    configuration error: a setting or option is missing or wrong (the line names it), including a
       layout (IMAGE_PATH_PATTERN) that no image file fits
  75   another full sync (or a product's sender) still held on after --wait seconds: the line names it
       (run id, host, when it started and was last renewed); nothing more was sent, run it again later
  130  stopped by Ctrl-C (SIGINT); 143 stopped by SIGTERM: the summary and --report name what was not sent

Settings come from the environment (docs/settings.md lists every one). Examples:
  image-sync sync                      full sync to every configured partner
  image-sync sync --item 100001        one product (repeatable); its full set goes to TRAEDE
  image-sync sync --dry-run            print what would be sent (JSON lines on stdout); call no partner
  image-sync sync --report run.json    also write the run report (what each partner got) as JSON
  image-sync flush                     send every pending product (queued by uploads/deletes) now
  image-sync doctor                    check settings, storage, a SAS download and both partners
  image-sync runs                      the run history: recent runs (see image-sync runs --help)
"""


class DryRunOutput:
    """Stands in for a partner (a ``Target`` with its name and batch size) and prints what would be sent, one
    JSON object per line: ``{"partner": ..., "record": ...}`` or ``{"partner": ..., "product": ...}``."""

    def __init__(self, partner: Partner, batch_size: int, out: TextIO):
        self.name = partner
        self.batch_size = batch_size
        self.out = out
        self._key = "product" if partner is Partner.TRAEDE else "record"
        self._lock = threading.Lock()

    def send(self, payloads: list[dict[str, Any]], guard: Guard | None = None) -> None:
        text = "".join(json.dumps({"partner": self.name, self._key: p}, ensure_ascii=False) + "\n"
                       for p in payloads)
        with self._lock:
            self.out.write(text)

    def stats(self) -> dict[str, int]:
        return {"requests": 0, "retries": 0}

    def abort(self) -> None:
        """Nothing is in flight: the dry run only prints."""

    def close(self) -> None:
        """Nothing to release."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image-sync", description="Sync product images from Azure Blob Storage to Wallie and TRAEDE.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{sync,flush,doctor,runs}")
    sync = sub.add_parser("sync", help="sync images to the configured partners", epilog=EPILOG,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    sync.add_argument("--item", action="append", metavar="ID", help="only this product (repeatable)")
    sync.add_argument("--allow-empty", action="store_true",
                      help="with --item: send a product that has no image as an empty set, which deletes all "
                           "its images at TRAEDE (without it such a product is reported and not sent)")
    sync.add_argument("--dry-run", action="store_true",
                      help="print what would be sent (one JSON object per line, with working SAS URLs); "
                           "call no partner")
    sync.add_argument("--report", metavar="PATH",
                      help="also write the run report as JSON to PATH: counts, every problem, and what each "
                           "partner got per product (URLs without their signature)")
    sync.add_argument("--wait", metavar="SECONDS", type=float, default=DEFAULT_WAIT_SECONDS,
                      help="wait at most this long for another full sync (or a product's sender) to finish "
                           f"(default {DEFAULT_WAIT_SECONDS:g}; a crashed one's fence lapses within "
                           "FULL_SYNC_FENCE_SECONDS); then exit 75")
    sync.add_argument("--progress", metavar="SECONDS", type=float, default=10.0,
                      help="a progress line every SECONDS when stderr is not a terminal (default 10; 0: none)")
    flush = sub.add_parser("flush", help="send every pending product to TRAEDE now, without waiting for "
                                         "PRODUCT_SYNC_DELAY_SECONDS (uploads and deletes queue their product)")
    flush.add_argument("--list", action="store_true", help="only list the pending products; send nothing")
    flush.add_argument("--wait", metavar="SECONDS", type=float, default=DEFAULT_WAIT_SECONDS,
                       help=f"wait at most this long for a running full sync (default {DEFAULT_WAIT_SECONDS:g}); "
                            "then exit 75")
    sub.add_parser("doctor", help="check settings, storage, the layout, a SAS download and both partners' "
                                  "credentials; one line per check, exit 1 if any fails")
    runs_cli.add_runs_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None, stdout: TextIO | None = None,
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
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    _configure_logging(settings, stderr)
    if args.command == "sync":
        return _sync(args, settings, stdout, stderr)
    if args.command == "runs":
        return runs_cli.run(args, settings, stdout, stderr)
    return _flush(args, settings, stdout, stderr)


def _sync(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    refused = _not_startable(args, settings, stderr)
    if refused is not None:
        return refused
    wallie, traede = _dry_run_targets(settings, stdout) if args.dry_run else (None, None)
    log.info("sync started: %s", settings.describe())
    stopper = Stopper()
    stopper.install()
    try:
        with Components(settings, stop=stopper.stop, wallie=wallie, traede=traede) as parts, \
                Recording(None if args.dry_run else parts.history, "cli-sync", want_ledger=bool(args.report)) as rec:
            report = rec.report = SyncReport(ledger=rec.ledger, context={
                "container": settings.storage.container, "partners": settings.partner_urls(),
                "storage": parts.service.url})
            with _progress(report, args, stderr):
                stopper.on_abort(parts.abort)
                _run_sync(parts, args, report, lambda line: print(line, file=stderr, flush=True))
            if stopper.stop.is_set():
                report.interrupted = stopper.stop.reason
            rec.keep_now()
            _print_report(report, stderr, settings.secrets())
            if args.report:
                write_report(args.report, report.to_dict(), report.ledger)
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    except FullSyncBusy as exc:
        print(redact.redact(f"sync not done: {exc}", settings.secrets()), file=stderr)
        return EXIT_BUSY
    except ImageSyncError as exc:
        print(redact.redact(f"sync failed: {exc}", settings.secrets()), file=stderr)
        return EXIT_PROBLEMS
    finally:
        stopper.uninstall()
    if report.interrupted:
        return stopper.exit_code
    if report.nothing_fits:
        return EXIT_CONFIG
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _not_startable(args: argparse.Namespace, settings: Settings, stderr: TextIO) -> int | None:
    """Before any work: the options make sense, the report file can be written, the container can be listed
    (within seconds). The exit code and one line when not; None when the sync may start."""
    problem = path_problem("--report", args.report) or _option_problem(args)
    if problem:
        print(f"configuration error: {problem}", file=stderr)
        return EXIT_CONFIG
    try:
        check_container(settings.storage)
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    except StorageUnreachable as exc:
        print(f"sync not started: {exc}", file=stderr)
        return EXIT_PROBLEMS
    return None


def _dry_run_targets(settings: Settings, out: TextIO) -> tuple[Target | None, Target | None]:
    """What each configured partner would get; with none configured yet, what both would get."""
    both = not (settings.wallie or settings.traede)
    batch = settings.wallie.batch_size if settings.wallie else 500
    wallie = DryRunOutput(Partner.WALLIE, batch, out) if settings.wallie or both else None
    traede = DryRunOutput(Partner.TRAEDE, TraedeClient.batch_size, out) if settings.traede or both else None
    return wallie, traede


def _run_sync(parts: Components, args: argparse.Namespace, report: SyncReport, waiting: Callable[[str], None]) -> None:
    """The dry run, ``--item`` (each product under its lock), or a full sync behind its fence."""
    # --item is a code a person typed: each folder that spells it (NFC, or NFD as a Mac names it)
    items = [folder for code in args.item for folder in parts.catalog.folders(code)] if args.item else None
    if args.dry_run:
        parts.engine.full_sync(items, dry_run=True, empty_sets=args.allow_empty, report=report)
    elif items and parts.engine.traede:
        parts.product_queue.sync_now(items, empty_sets=args.allow_empty, on_wait=waiting, report=report,
                                     wait_seconds=args.wait)
    else:
        parts.product_queue.fenced("CLI sync", lambda fence: parts.engine.full_sync(
            items, fence=fence, empty_sets=args.allow_empty, report=report), wait_seconds=args.wait, on_wait=waiting)


def _flush(args: argparse.Namespace, settings: Settings, stdout: TextIO, stderr: TextIO) -> int:
    if not args.wait >= 0:
        print(f"configuration error: --wait {args.wait:g}: expected a number of seconds >= 0", file=stderr)
        return EXIT_CONFIG
    try:
        with Components(settings) as parts:
            if args.list:
                pending = parts.product_queue.pending()
                for item, age in sorted(pending.items()):
                    print(f"{item}\tpending for {age:.0f} s", file=stdout)
                print(f"{len(pending)} products pending", file=stderr)
                return EXIT_OK
            with Recording(parts.history, "cli-flush", context={
                    "container": settings.storage.container, "partners": settings.partner_urls()}) as rec:
                report = rec.report = parts.product_queue.flush(
                    on_wait=lambda line: print(line, file=stderr, flush=True), ledger=rec.ledger,
                    wait_seconds=args.wait)
    except ConfigError as exc:
        print(redact.redact(f"configuration error: {exc}"), file=stderr)
        return EXIT_CONFIG
    except FullSyncBusy as exc:
        print(redact.redact(f"flush not done: {exc}"), file=stderr)
        return EXIT_BUSY
    except ImageSyncError as exc:
        print(redact.redact(f"flush failed: {exc}"), file=stderr)
        return EXIT_PROBLEMS
    _print_report(report, stderr, settings.secrets())
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _option_problem(args: argparse.Namespace) -> str | None:
    if args.allow_empty and not args.item:
        return "--allow-empty only applies with --item (a full sync never sends a product without images)"
    if args.progress < 0:
        return f"--progress {args.progress:g}: expected a number of seconds >= 0"
    if not args.wait >= 0:
        return f"--wait {args.wait:g}: expected a number of seconds >= 0"
    return None


def _progress(report: SyncReport, args: argparse.Namespace, stderr: TextIO) -> Progress:
    """On a terminal: one line that keeps updating (twice a second). Elsewhere: a log line at INFO."""
    if args.dry_run or args.progress == 0:
        return Progress(report, lambda line: None, every=0)
    if stderr.isatty():
        lock = threading.Lock()

        def show(line: str) -> None:
            with lock:
                stderr.write("\r" + line + " " * 8)
                stderr.flush()

        return _Terminal(report, show, stderr)
    return Progress(report, lambda line: log.info("%s", line), every=args.progress)


class _Terminal(Progress):
    """Progress on a terminal: updates twice a second, ends its line when the run ends."""

    def __init__(self, report: SyncReport, show: Any, stream: TextIO):
        super().__init__(report, show, every=0.5)
        self.stream = stream
        self.report = report

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.emit(progress_line(self.report, 0.0).rsplit(";", 1)[0])
        self.stream.write("\n")


def _print_report(report: SyncReport, stderr: TextIO, secrets: Sequence[str] = ()) -> None:
    """One line per cause, then the summary. Printed, not logged: the log filter does not see these
    lines, so they are redacted here."""
    for line in report.grouped_lines() + [report.summary()]:
        print(printable(redact.redact(line, secrets)), file=stderr)


def _configure_logging(settings: Settings, stream: TextIO) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    redact.install(handler, settings.secrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("shared").setLevel(settings.log_level)

