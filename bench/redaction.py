"""What redacting signatures by value costs: ``python -m bench.redaction --urls 100000``.

Every SAS signature the app signs is remembered (``redact.remember_signature``) so that no output shows it
however a partner echoes it. This measures, in one process, each place that work lands, with the
signature net on and off (off: ``remember_signature`` and the by-value/by-shape scan replaced by no-ops):

1. **signing**: ``--urls`` URLs through ``SasSigner`` (its one-HMAC template path, as a full sync signs);
2. **history**: splitting a full sync's kept report into parts (``history._Parts``: every entry of the
   ledger redacted once more), for a ledger of ``--urls`` Wallie records and one TRAEDE set per 5 images;
3. **redact()**: microseconds a call for a skip reason, a DEBUG log line, and a 2 KB partner error that
   echoes ten SAS URLs in five spellings;
4. **memory** of the filter (tracemalloc) after ``--urls`` and after 1,000,000 signatures, and its false
   "issued" answers for 200,000 random strings of a signature's length once it is full.

No storage or partner is needed (the signer runs on Azurite's well-known development key, offline). Each
figure is the best of ``--repeat`` runs, off and on taken in turn (a shared machine is noisy; the best run
is the one least disturbed). Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from shared import redact
from shared.storage import sas

DEV_CONNECTION = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
                  "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
                  "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;")


@contextmanager
def net(on: bool) -> Iterator[None]:
    """The signature net as shipped (on), or without its new work (off)."""
    saved = sas.remember_signature, redact._mask_signatures
    if not on:
        sas.remember_signature = lambda signature: None  # type: ignore[assignment]
        redact._mask_signatures = lambda text: text  # type: ignore[assignment]
    try:
        yield
    finally:
        sas.remember_signature, redact._mask_signatures = saved


def signer() -> sas.SasSigner:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(DEV_CONNECTION)
    return sas.SasSigner(service, "bench", ttl=timedelta(hours=48), start_skew=timedelta(minutes=15))


def names(count: int) -> list[str]:
    return [f"{100000 + n // 5}/{'BLK' if n % 2 else 'WHT'}/front-{n}.jpg" for n in range(count)]


def time_signing(blobs: list[str], on: bool) -> float:
    sign = signer()
    sign.url(blobs[0])  # the template
    with net(on):
        started = time.perf_counter()
        for blob in blobs:
            sign.url(blob)
        return time.perf_counter() - started


def time_history(blobs: list[str], on: bool) -> float:
    """``_Parts`` of a full sync: the ledger's entries (written redacted already) and the report's head."""
    from shared.catalog.records import ImageRecord, SignedImage, image_id_for
    from shared.engine.lanes import Unit
    from shared.partners.payloads import traede_product, wallie_record
    from shared.runs.ledger import Ledger
    from shared.runs.parts import Parts as _Parts
    from shared.runs.report import SyncReport

    sign = signer()
    ledger = Ledger()
    report = SyncReport(ledger=ledger, layout="{item_id}/{color_id}/{name}|{item_id}/{name}")
    product: list[SignedImage] = []
    for blob in blobs:
        item = blob.split("/", 1)[0]
        record = ImageRecord(blob, item, blob.split("/")[1], 0, None, None, 1000, image_id_for(blob),
                             f"{image_id_for(blob)}:md5:00ff")
        signed = SignedImage(record, sign.url(blob))
        ledger.record("wallie", Unit(wallie_record(signed), item, blob), "delivered")
        if product and product[0].record.item_id != item:
            body = traede_product(product[0].record.item_id, product)
            ledger.record("traede", Unit(body.body, product[0].record.item_id, None, body.records), "delivered")
            product = []
        product.append(signed)
    report.images = len(blobs)
    with net(on):
        started = time.perf_counter()
        with _Parts(report, ledger) as parts:
            for _ in parts.chunks():
                pass
        seconds = time.perf_counter() - started
    ledger.close()
    return seconds


def texts(sign: sas.SasSigner) -> dict[str, str]:
    urls = [sign.url(f"300001/BLK/{n}.jpg") for n in range(10)]
    spellings = [lambda u: u, lambda u: quote(u, safe=""), lambda u: u.replace("&", "&amp;"),
                 lambda u: json.dumps(u).replace("&", "\\u0026").replace("+", "\\u002B"),
                 lambda u: json.dumps(dict(part.split("=", 1) for part in u.split("?", 1)[1].split("&")))]
    echo = json.dumps({"message": "Unprocessable entity", "errors": [spellings[n % 5](u) for n, u in enumerate(urls)]})
    return {
        "skip reason (95 chars)": "'300001/notes.txt': not an image: the extension is not one of avif, bmp, gif, "
                                  "jpeg, jpg",
        "DEBUG log line (90 chars)": "traede: POST /products/images/sync (10 products): HTTP 200 in 23 ms (attempt 1)",
        f"partner echo ({len(echo) // 100 / 10:g} KB, 10 SAS URLs)": echo,
    }


def time_redact(text: str, on: bool, rounds: int) -> float:
    with net(on):
        started = time.perf_counter()
        for _ in range(rounds):
            redact.redact(text)
        return (time.perf_counter() - started) / rounds * 1e6


def filter_memory(count: int) -> float:
    fresh = redact._IssuedSignatures()
    tracemalloc.start()
    for _ in range(count):
        fresh.add(base64.b64encode(os.urandom(32)).decode())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def false_positives(probes: int) -> int:
    full = redact._IssuedSignatures()
    for _ in range(full.CAPACITY):
        full.add(base64.b64encode(os.urandom(32)).decode())
    return sum(base64.b64encode(os.urandom(32)).decode()[:43] in full for _ in range(probes))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.redaction", description=__doc__.splitlines()[0])
    p.add_argument("--urls", type=int, default=100_000, help="URLs signed, and ledger records kept")
    p.add_argument("--rounds", type=int, default=20_000, help="redact() calls per text")
    p.add_argument("--probes", type=int, default=200_000, help="random strings looked up in a full filter")
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    args = p.parse_args(argv)
    blobs = names(args.urls)
    out: dict[str, Any] = {"urls": args.urls, "cores": os.cpu_count(), "repeat": args.repeat}
    rows = []
    def best(measure: Any, subject: Any) -> tuple[float, float]:
        runs = [(measure(subject, False), measure(subject, True)) for _ in range(max(1, args.repeat))]
        return min(off for off, _ in runs), min(on for _, on in runs)

    for label, measure in (("signing", time_signing), ("history parts", time_history)):
        off, on = best(measure, blobs)
        key = label.split()[0]
        out[f"{key}_off_s"], out[f"{key}_on_s"] = round(off, 3), round(on, 3)
        rows.append((f"{label} ({args.urls:,})", f"{off:.3f} s", f"{on:.3f} s",
                     f"+{(on - off) / args.urls * 1e6:.2f} µs each"))
    out["redact_us"] = {}
    for label, text in texts(signer()).items():
        off, on = best(lambda t, on: time_redact(t, on, args.rounds), text)
        out["redact_us"][label] = {"off": round(off, 2), "on": round(on, 2)}
        rows.append((f"redact(): {label}", f"{off:.1f} µs", f"{on:.1f} µs", f"+{on - off:.1f} µs"))
    out["filter_mb"] = round(filter_memory(args.urls), 2)
    out["filter_mb_1m"] = round(filter_memory(1_000_000), 2)
    out["false_positives"] = false_positives(args.probes)
    out["probes"] = args.probes
    print(f"{'':52} {'net off':>10} {'net on':>10}  cost")
    for label, off_text, on_text, cost in rows:
        print(f"{label:52} {off_text:>10} {on_text:>10}  {cost}")
    print(f"filter memory: {out['filter_mb']} MB after {args.urls:,} signatures, {out['filter_mb_1m']} MB after "
          f"1,000,000; full ({redact._IssuedSignatures.CAPACITY:,}): {out['false_positives']} of "
          f"{args.probes:,} random strings wrongly 'issued'")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
