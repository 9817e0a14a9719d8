"""One full sync in a fresh process, so its peak RSS and import cost are the app's own.

Settings come from the environment, as in the Functions host. Prints one JSON line on stdout.
``--profile FILE`` writes a pyinstrument text profile (pip install pyinstrument).
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    parser.add_argument("--profile", help="write a pyinstrument profile of the sync to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    from shared.factory import Components
    from shared.settings import Settings

    imported = time.perf_counter() - started
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002)
        profiler.start()
    with Components(Settings.from_env()) as parts:
        t0 = time.perf_counter()
        report = parts.engine.full_sync()
        wall = time.perf_counter() - t0
    if profiler:
        profiler.stop()
        with open(args.profile, "w") as out:
            out.write(profiler.output_text(unicode=True, show_all=False))
    print(json.dumps({
        "ok": report.ok, "images": report.images, "products": report.products, "skipped": len(report.skipped),
        "rejected": len(report.rejected), "failed": len(report.failed), "delivered": report.delivered,
        "requests": report.requests, "retries": report.retries, "wall_s": round(wall, 3),
        "import_s": round(imported, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "problems": [p.line() for p in (report.rejected + report.failed)[:5]],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
