"""Fan-out of the nightly sync over many Functions instances, for catalogs one invocation cannot finish.

When the layout starts with ``{item_id}<separator>`` the listing is sorted by product: every product's
blobs share the prefix ``<item_id><separator>`` (its *group*) and groups never interleave. The timer lists
the container once (names and metadata, no SAS, nothing sent) and cuts it after every
``SYNC_SHARD_PRODUCTS`` groups. A shard owns the half-open key range ``(after, upto]`` of group keys, so
the shards partition the whole key space and every product belongs to exactly one shard, also a product
whose images straddle a listing page or that appears after the plan was made. A shard message is small
JSON::

    {"v": 1, "container": "product-images", "shard": 3, "shards": 50,
     "after": "100599/", "upto": "100799/", "marker": "<listing continuation token>"}

``marker`` is the continuation token of the listing page on which the shard's first product begins, so
a shard lists only its own part of the container. With such a layout ``itemid`` metadata cannot move an
image into another product's folder (the catalog skips it), so a product's images are all in its group.

Layouts that do not start with ``{item_id}`` (``PathLayout.item_prefix_separator`` is None) cannot be cut
this way: the timer then runs the single-process full sync, as does a catalog of at most
``SYNC_SHARD_PRODUCTS`` products, or ``SYNC_SHARD_PRODUCTS=0``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from ..catalog.container import Catalog
from ..catalog.records import CatalogEntry
from ..errors import ConfigError

log = logging.getLogger(__name__)

MESSAGE_VERSION = 1


@dataclass
class Shard:
    """One queue message: the group keys in ``(after, upto]`` (None = open end), listed from ``marker``."""

    index: int
    count: int
    container: str
    after: str | None
    upto: str | None
    marker: str | None
    run: str = ""  # the night's run: shards of one run cover disjoint products and never wait for each other

    def to_json(self) -> str:
        return json.dumps({"v": MESSAGE_VERSION, "container": self.container, "shard": self.index,
                           "shards": self.count, "after": self.after, "upto": self.upto,
                           "marker": self.marker, "run": self.run}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Shard:
        try:
            data = json.loads(text)
            if data.get("v") != MESSAGE_VERSION:
                raise ValueError(f"version {data.get('v')!r}, expected {MESSAGE_VERSION}")
            return cls(index=int(data["shard"]), count=int(data["shards"]), container=str(data["container"]),
                       after=data["after"], upto=data["upto"], marker=data["marker"],
                       run=str(data.get("run") or ""))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a shard message ({exc}): {text[:200]!r}") from exc

    def owns(self, key: str) -> bool:
        return (self.after is None or key > self.after) and (self.upto is None or key <= self.upto)


@dataclass(frozen=True)
class FanOut:
    """The timer's outcome when it enqueued shards instead of syncing: nothing was sent yet."""

    shards: int
    groups: int
    queue: str
    per_shard: int
    listed: int
    seconds: float

    def summary(self) -> str:
        return (f"nightly sync fanned out: {self.shards} shards enqueued to queue {self.queue!r} "
                f"({self.groups} products in {self.listed} blobs, up to {self.per_shard} products a shard), "
                f"{self.seconds:.1f}s")


def group_key(name: str, sep: str) -> str:
    """The listing group of a blob name: everything up to and including the first separator."""
    cut = name.find(sep)
    return name if cut < 0 else name[:cut + len(sep)]


def plan(catalog: Catalog, per_shard: int, container: str, run: str = "") -> tuple[list[Shard], int, int] | None:
    """Cut the container into shards of ``per_shard`` groups: ``(shards, groups, blobs)``, or None
    when the layout or the listing does not allow it (the caller then syncs in one process)."""
    sep = catalog.layout.item_prefix_separator
    if sep is None or per_shard <= 0:
        return None
    cuts: list[tuple[str | None, str | None]] = [(None, None)]  # (after, marker) of each shard
    last: str | None = None
    in_shard = groups = listed = 0
    for marker, blobs in catalog.pages():
        for blob in blobs:
            listed += 1
            key = group_key(blob.name, sep)
            if key != last:
                if last is not None and key < last:
                    log.warning("listing order differs from name order at %r: not sharding", blob.name)
                    return None
                if in_shard == per_shard:
                    cuts.append((last, marker))
                    in_shard = 0
                in_shard += 1
                groups += 1
                last = key
    if len(cuts) < 2:
        return None
    uptos = [after for after, _ in cuts[1:]]  # shard i ends where shard i + 1 starts
    shards = [Shard(i, len(cuts), container, after, uptos[i] if i < len(uptos) else None, marker, run)
              for i, (after, marker) in enumerate(cuts)]
    return shards, groups, listed


def shard_entries(catalog: Catalog, shard: Shard) -> Iterator[CatalogEntry]:
    """The shard's blobs: its own range of product folders, listed from the page where it begins."""
    sep = catalog.layout.item_prefix_separator
    if sep is None:
        raise ConfigError("IMAGE_PATH_PATTERN does not start with {item_id} and a separator: "
                          "shards cannot be listed (the nightly sync runs in one process for this layout)")
    for _marker, blobs in catalog.pages(marker=shard.marker):
        for blob in blobs:
            key = group_key(blob.name, sep)
            if shard.after is not None and key <= shard.after:
                continue  # the page began in the previous shard
            if shard.upto is not None and key > shard.upto:
                return  # the next shard's first product
            yield catalog.describe(blob)
