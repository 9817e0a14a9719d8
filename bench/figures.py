"""The figures the benchmark derives from its measurements: the floor per partner lane, and the median and
spread of repeated runs.

Each partner has its own lane with ``SYNC_CONCURRENCY`` workers (``shared.lanes``), so the partners' side
of the floor is the slowest lane's, not every request over one lane's workers: a lane sends its minimum
requests ``concurrency`` at a time, each taking at least the partner's latency.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

TRAEDE_PRODUCTS_PER_REQUEST = 10  # shared.partners.traede.MAX_PRODUCTS_PER_REQUEST, the API's maximum


def lane_floors(images: int, products: int, *, batch_size: int, latency_ms: float,
                concurrency: int) -> dict[str, dict[str, float]]:
    """Each lane's minimum requests and the time they take at best: requests x latency / concurrency.

    Wallie: one request per ``batch_size`` images, plus the token (fetched by a Wallie worker).
    TRAEDE: one request per 10 products."""
    requests = {"wallie": math.ceil(images / batch_size) + 1,
                "traede": math.ceil(products / TRAEDE_PRODUCTS_PER_REQUEST)}
    return {lane: {"requests": n, "concurrency": concurrency,
                   "floor_s": round(n * latency_ms / 1000 / concurrency, 4)}
            for lane, n in requests.items()}


def floor_s(listing_s: float, signing_s: float, lanes: dict[str, dict[str, float]]) -> float:
    """The sync can beat neither storage (list every page, sign every URL) nor its slowest partner lane."""
    return max(listing_s + signing_s, max(lane["floor_s"] for lane in lanes.values()))


def median_and_spread(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, min, max) of a figure over the repeated runs."""
    data = sorted(values)
    return statistics.median(data), data[0], data[-1]


def summarize(runs: list[dict[str, float]], keys: Iterable[str], digits: int = 3) -> tuple[dict, dict]:
    """The medians of ``keys`` over ``runs``, and their spread as ``[min, max]``."""
    medians, spread = {}, {}
    for key in keys:
        mid, low, high = median_and_spread(run[key] for run in runs)
        medians[key] = round(mid, digits)
        spread[key] = [round(low, digits), round(high, digits)]
    return medians, spread


def spread_text(spread: dict[str, list[float]], key: str, unit: str = " s", fmt: str = ".1f") -> str:
    low, high = spread[key]
    return f"{low:{fmt}}–{high:{fmt}}{unit}"
