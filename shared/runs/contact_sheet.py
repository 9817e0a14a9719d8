"""The contact sheet: what each partner was sent, as pictures, in one self-contained HTML page.

People would rather look than read. For a run, or for one product over the runs that touched it, each
product shows its images in TRAEDE's order as thumbnails, with kind, colour, sort, alt text and key, what
Wallie got for each image, every partner's outcome (failures in red, with the partner's reason), and the
product's skipped blobs with the reasons.

The page opens from a file in any browser: CSS and a few lines of script are inline, allowed by their
hashes in the page's Content-Security-Policy (no 'unsafe-inline', no inline event handler), so markup that
slipped past escaping still runs no script. The only requests it makes are the thumbnails, through fresh
SAS URLs that are read-only, blob-scoped and expire after ``THUMBNAIL_TTL`` (the page says when). The
stored history never holds a signature, every reason is redacted again as it is shown, and no account key,
token or password reaches the page. Everything shown is escaped: blob names and metadata are anyone's
to choose. A run of 100,000 images must not make a 100 MB page, so a sheet shows at most
``MAX_PRODUCTS`` products (every product with a problem first, then a sample of the others),
``MAX_IMAGES`` images a product and ``MAX_SKIPPED`` skipped blobs, and says so.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING, Any

from ..catalog.layout import TYPE_NAMES
from ..domain import Outcome
from ..redact import redact
from .history import RunHistory
from .links import Links
from .names import part_of, run_kind, run_time
from .report import STORAGE
from .validation import listed

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

THUMBNAIL_TTL = timedelta(hours=1)
MAX_PRODUCTS = 200
MAX_IMAGES = 60
MAX_SKIPPED = 200
MAX_RUNS = 20
MAX_TEXT = 500
PROBLEM_OUTCOMES = tuple(o.value for o in Outcome if o.is_problem)  # shown in red

Sign = Callable[[str, str], str]  # (container, blob name) -> a read-only URL for that blob


@dataclass(slots=True)
class Card:
    """One product as one run left it: the entries the history kept for it."""

    item: str
    container: str
    entries: list[dict[str, Any]]
    heading: str = ""  # on a product's sheet: which run

    def outcomes(self) -> dict[str, tuple[str, list[str]]]:
        """Per partner (not storage): the worst outcome and its reasons."""
        from .parts import worst

        found: dict[str, list[dict[str, Any]]] = {}
        for entry in self.entries:
            if entry.get("partner") != STORAGE:
                found.setdefault(str(entry.get("partner")), []).append(entry)
        out = {}
        for partner, entries in sorted(found.items()):
            outcome = worst(str(e.get("outcome")) for e in entries)
            reasons = list(dict.fromkeys(_reason(e) for e in entries
                                         if e.get("outcome") == outcome and e.get("reason")))
            out[partner] = (outcome, reasons)
        return out

    @property
    def has_problem(self) -> bool:
        return any(outcome in PROBLEM_OUTCOMES for outcome, _ in self.outcomes().values())


@dataclass(slots=True)
class _Page:
    title: str
    facts: list[tuple[str, str]]
    notes: list[str]
    cards: list[Card]
    skipped: list[tuple[str, int, list[dict[str, Any]]]] = field(default_factory=list)  # (cause, how many, first)
    skipped_total: int = 0
    empty: str = "Nothing was sent in this run."
    unit: str = "products"  # what a card is on this page: a product (a run's sheet), or a run (a product's)
    resubmit: str | None = None  # served over HTTP: the failed run the page's form resubmits


def signer(service: BlobServiceClient, *, start_skew: timedelta) -> Sign:
    """Thumbnail URLs: read-only, one blob each, valid ``THUMBNAIL_TTL``; one ``SasSigner`` per container
    (the account key, or a user-delegation key in Azure)."""
    from ..storage.sas import SasSigner

    signers: dict[str, SasSigner] = {}

    def sign(container: str, blob: str) -> str:
        if container not in signers:
            signers[container] = SasSigner(service, container, ttl=THUMBNAIL_TTL, start_skew=start_skew)
        return signers[container].url(blob)

    return sign


# -- building a sheet ----------------------------------------------------------------------------------

def run_sheet(history: RunHistory, run_id: str, sign: Sign, *, default_container: str,
              now: datetime | None = None, max_products: int = MAX_PRODUCTS, damage: list[str] | None = None,
              served: bool = False) -> str:
    """The sheet of one run: its products with a problem first, then a sample of the others. A damaged part of
    the history is left out, with a note on the page (and a line in ``damage``). ``served``: the deployed app's
    HTTP page, which offers a failed run's resubmit as a form (see ``resubmit_form``)."""
    damage = [] if damage is None else damage
    head = history.load(run_id)
    run_id = str(head.get("run", run_id))
    parts = int(head.get("parts") or 1)
    container = str(head.get("container") or default_container)
    problem_items = list(dict.fromkeys(
        str(p.get("item")) for kind in ("rejected", "failed", "deferred") for p in head.get(kind) or []
        if p.get("item") not in (None, "*")))
    chosen = problem_items[:max_products]
    wanted_parts = {part_of(item, parts) for item in chosen}
    entries: dict[str, list[dict[str, Any]]] = {item: [] for item in chosen}
    others = 0
    all_items: set[str] = set()
    for part in range(parts):
        room = others < max_products - len(chosen)
        if part not in wanted_parts and not room:
            continue
        for entry in history.read_part(run_id, part, damage):
            item = str(entry.get("item"))
            all_items.add(item)
            if item in entries:
                entries[item].append(entry)
            elif others < max_products - len(chosen):
                entries[item] = [entry]
                others += 1
    cards = sorted((Card(item, container, found) for item, found in entries.items() if found),
                   key=lambda c: (not c.has_problem, c.item))
    total = max(int(head.get("products") or 0), len(all_items))
    notes = []
    if len(cards) < total:
        notes.append(f"This page shows {len(cards)} of {total} products: every product with a problem first, then "
                     f"a sample of the others (at most {max_products}). `image-sync runs show {run_id} --json` "
                     "names every one, and `image-sync runs sheet --item ID` shows one product.")
    state = "ok" if head.get("ok") else "FAILED"
    delivered = ", ".join(f"{name} {count}" for name, count in (head.get("delivered") or {}).items()) or "nothing"
    facts = [
        ("Run", run_id),
        ("Started", f"{run_time(run_id):%Y-%m-%d %H:%M:%S} UTC, {float(head.get('seconds') or 0):.1f} s"),
        ("What", f"{head.get('kind', run_kind(run_id))} ({head.get('mode', '?')}"
                 f"{', dry run' if head.get('dry_run') else ''})"),
        ("Outcome", f"{state}: {head.get('images', 0)} images, {head.get('products', 0)} products; delivered "
                    f"{delivered}; rejected {listed(head, 'rejected')}, failed {listed(head, 'failed')}, "
                    f"deferred {listed(head, 'deferred')}, skipped {listed(head, 'skipped')}"),
        ("Container", container),
        ("Partners", ", ".join(f"{n} at {u}" for n, u in (head.get("partners") or {}).items()) or "none"),
    ]
    if head.get("interrupted"):
        facts.append(("Stopped by", str(head["interrupted"])))
    for line in head.get("notes") or []:
        facts.append(("Note", str(line)))
    for problem in (head.get("failed") or [])[:5]:
        if problem.get("item") == "*":
            facts.append(("Failure", f"{problem.get('partner')}: {_why(problem)}"))
    resubmits = head.get("resubmits") or []
    if resubmits:
        facts.append(("Resubmit of", ", ".join(resubmits[:5]) + (f" and {len(resubmits) - 5} more"
                                                                 if len(resubmits) > 5 else "")))
    claim = Links(history).get(run_id)
    if claim is not None:
        facts.append(("Resubmitted", claim.describe()))
    offer = (not head.get("ok") or bool(head.get("interrupted"))) and claim is None
    if offer and not served:
        notes.append(f"To send again what this run left undone, as the container holds it now: "
                     f"`image-sync runs resubmit {run_id}`.")
    notes += [f"Left out: {line}" for line in damage]
    page = _Page(f"Contact sheet: run {run_id}", facts, notes, cards, _by_cause(head.get("skipped") or []),
                 listed(head, "skipped"), resubmit=run_id if offer and served else None)
    return _render(page, sign, now=now, served=served)


def product_sheet(history: RunHistory, item: str, sign: Sign, *, default_container: str,
                  now: datetime | None = None, limit: int = MAX_RUNS, damage: list[str] | None = None,
                  served: bool = False) -> str | None:
    """The sheet of one product over the newest runs that touched it (None when no kept run did)."""
    damage = [] if damage is None else damage
    runs = history.item_runs(item, limit=limit, damage=damage)
    if not runs:
        return None
    cards = [Card(item, run.container or default_container, run.entries,
                  heading=f"{run.started:%Y-%m-%d %H:%M:%S} UTC · {run_kind(run.run_id)} · run {run.run_id}")
             for run in runs]
    facts = [("Product", item), ("Runs", f"the {len(runs)} newest kept runs that touched it, newest first "
                                         f"(runs are kept {history.days} days)")]
    for partner in dict.fromkeys(p for c in cards for p in c.outcomes()):
        latest = next((c for c in cards if partner in c.outcomes()), None)
        if latest is not None:
            outcome, _ = latest.outcomes()[partner]
            facts.append((f"{partner}, last run", f"{outcome} ({latest.heading})"))
        accepted = next((c for c in cards if c.outcomes().get(partner, ("",))[0] == "delivered"
                         and _product_set(c, partner) is not None), None)
        if accepted is not None:
            images = _product_set(accepted, partner) or []
            facts.append((f"{partner} holds", f"the set of {len(images)} images it accepted in {accepted.heading}"))
    notes = []
    if len(runs) == limit:
        notes.append(f"Only the {limit} newest runs are shown; `image-sync runs --item {item} --limit N` lists more.")
    notes += [f"Left out: {line}" for line in damage]
    return _render(_Page(f"Contact sheet: product {item}", facts, notes, cards, unit="runs"), sign, now=now,
                   served=served)


def _product_set(card: Card, partner: str) -> list[dict[str, Any]] | None:
    for entry in card.entries:
        if entry.get("partner") == partner and isinstance(entry.get("images"), list):
            images: list[dict[str, Any]] = entry["images"]
            return images
    return None


# -- rendering -----------------------------------------------------------------------------------------

def _render(page: _Page, sign: Sign, *, now: datetime | None, served: bool = False) -> str:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    until = now + THUMBNAIL_TTL
    urls: dict[tuple[str, str], str] = {}

    def url(container: str, blob: str) -> str:
        key = (container, blob)
        if key not in urls:
            urls[key] = sign(container, blob)
        return urls[key]

    problems = sum(1 for c in page.cards if c.has_problem)
    head = _HEAD.replace("{policy}", SERVED_POLICY if served else PAGE_POLICY)
    out = [head.replace("{title}", _e(page.title)), "<header>", f"<h1>{_e(page.title)}</h1>",
           '<table class="facts">']
    out += [f"<tr><th>{_e(k)}</th><td>{_e(_clip(v, 2000))}</td></tr>" for k, v in page.facts]
    out.append("</table>")
    out.append(f'<p class="note">Thumbnails load through read-only SAS links to one blob each, made for this '
               f"page at {now:%Y-%m-%d %H:%M} UTC and valid for {_hours(THUMBNAIL_TTL)}, until "
               f"<b>{until:%Y-%m-%d %H:%M} UTC</b>. After that the pictures stop loading: make a new sheet. "
               "The pictures are what the partners were sent (the original, or its web rendition), shown small.</p>")
    for note in page.notes:
        out.append(f'<p class="note">{_e(_clip(note, 2000))}</p>')
    if page.resubmit is not None:
        out.append(resubmit_form(page.resubmit))
    bad = f'<span class="count-bad">{problems} with a problem</span> (red)' if problems else "none with a problem"
    out.append(f'<p class="legend">{len(page.cards)} {page.unit} shown, {bad}. Pictures are in the order TRAEDE '
               "got them.</p>")
    out.append("</header><main>")
    if not page.cards:
        out.append(f'<p class="empty">{_e(page.empty)}</p>')
    for card in page.cards:
        out.append(_card(card, url))
    if page.skipped:
        out.append(f'<section class="skipped"><h2>Skipped blobs ({page.skipped_total})</h2>'
                   "<p>Not sent to any partner, by cause.</p>")
        shown = 0
        for cause, count, entries in page.skipped:
            out.append(f'<h3>{_e(_clip(cause))} <span class="count">({count})</span></h3><table>')
            out += [f"<tr><td class=\"blob\">{_e(s.get('blob'))}</td><td>{_e(_clip(s.get('detail')))}</td></tr>"
                    for s in entries]
            out.append("</table>" + (f"<p>and {count - len(entries)} more.</p>" if count > len(entries) else ""))
            shown += count
        if page.skipped_total > shown:
            out.append(f"<p>and {page.skipped_total - shown} more (the report names every one).</p>")
        out.append("</section>")
    out.append(f"<footer>Made by image-sync at {now:%Y-%m-%d %H:%M:%S} UTC.</footer></main></body></html>\n")
    return "\n".join(out)


def resubmit_form(run_id: str) -> str:
    """The HTTP page's button that resubmits a failed run: a plain form, no script (the policy allows none).

    It has no ``action``: a form that posts without one posts to the page's own address, query included, so
    the function key the page was opened with (``?code=``) goes with it, and is never written into the page:
    it travels no further than the address the browser already holds. The function ``resubmit_from_sheet``
    answers POSTs to that address. The run to resubmit is the form's own field, never the address's ``run``
    (which may say ``latest``: another run by the time the button is pressed)."""
    return ('<form method="post" class="resubmit">'
            f'<input type="hidden" name="run" value="{_e(run_id)}">'
            '<button type="submit">Resubmit what this run left undone</button>'
            '<span>Sends each product and image again as the container holds it now, under the same locks as any '
            "send. Once: pressing it again shows the first resubmit.</span></form>")


def _card(card: Card, url: Callable[[str, str], str]) -> str:
    outcomes = card.outcomes()
    css = "product problem" if card.has_problem else "product"
    out = [f'<section class="{css}" data-item="{_e(card.item)}">']
    title = f"Product {_e(card.item)}"
    if card.heading:
        title += f' <span class="run">{_e(card.heading)}</span>'
    out.append(f"<h2>{title}</h2>")
    out.append('<div class="outcomes">')
    for partner, (outcome, _) in outcomes.items():
        out.append(f'<span class="badge {_slug(outcome)}">{_e(partner)}: {_e(outcome)}</span>')
    out.append("</div>")
    for partner, (outcome, reasons) in outcomes.items():
        for reason in reasons[:3]:
            css_reason = "reason bad" if outcome in PROBLEM_OUTCOMES else "reason"
            out.append(f'<p class="{css_reason}"><b>{_e(partner)} {_e(outcome)}:</b> {_e(reason)}</p>')
    sets = [(str(e.get("partner")), e) for e in card.entries if isinstance(e.get("images"), list)]
    per_image: dict[str, list[dict[str, Any]]] = {}
    for entry in card.entries:
        if entry.get("blob") and "images" not in entry and entry.get("partner") != STORAGE \
                and not entry.get("synthetic"):
            per_image.setdefault(str(entry["blob"]), []).append(entry)
    figures: list[str] = []
    shown: set[str] = set()
    if sets:
        partner, product_set = sets[0]
        images = product_set["images"]
        if product_set.get("item_number"):
            out.append(f"<p>{_e(partner)} item number: <b>{_e(product_set['item_number'])}</b></p>")
        if not images:
            out.append(f'<p class="reason bad">{_e(partner)} was sent an empty set: it deletes every image of the '
                       "product.</p>")
        for image in images:
            blob = str(image.get("blob") or "")
            shown.add(blob)
            figures.append(_figure(card, blob, url, in_set=(partner, product_set, image),
                                   others=per_image.get(blob, [])))
    for blob, entries in per_image.items():
        if blob not in shown:
            figures.append(_figure(card, blob, url, in_set=None, others=entries))
    if figures:
        out.append('<div class="grid">')
        out += figures[:MAX_IMAGES]
        out.append("</div>")
        if len(figures) > MAX_IMAGES:
            out.append(f"<p>and {len(figures) - MAX_IMAGES} more images (this page shows {MAX_IMAGES} a "
                       "product).</p>")
    elif not any(outcome == "queued" for outcome, _ in outcomes.values()):
        out.append("<p>No image was sent for this product in this run.</p>")
    skipped = [e for e in card.entries if e.get("partner") == STORAGE]
    if skipped:
        out.append('<ul class="skipped-here">')
        out += [f"<li>skipped <span class=\"blob\">{_e(e.get('blob'))}</span>: {_e(_clip(_why(e)))}</li>"
                for e in skipped[:20]]
        out.append("</ul>")
    out.append("</section>")
    return "\n".join(out)


def _figure(card: Card, blob: str, url: Callable[[str, str], str], *,
            in_set: tuple[str, dict[str, Any], dict[str, Any]] | None, others: list[dict[str, Any]]) -> str:
    bad = any(str(e.get("outcome")) in PROBLEM_OUTCOMES for e in others) or \
        (in_set is not None and str(in_set[1].get("outcome")) in PROBLEM_OUTCOMES)
    lines = []
    if in_set is not None:
        partner, product_set, image = in_set
        head = f"#{image.get('sort', '?')} · {image.get('filename') or blob.rsplit('/', 1)[-1]}"
        lines.append(f'<div class="pos">{_e(head)}</div>')
        lines.append(f"<div>{_e(_kind(image.get('type')))} · {_e(_colour(image.get('colour')))}</div>")
        if image.get("sort_b2c") is not None or image.get("variant"):
            extra = [f"B2C sort {image.get('sort_b2c')}"] if image.get("sort_b2c") is not None else []
            variant = image.get("variant")
            extra += [f"{k} {v}" for k, v in (variant.items() if isinstance(variant, dict) else ())]
            lines.append(f"<div>{_e(partner)}: {_e(' · '.join(extra))}</div>")
        if image.get("alt"):
            lines.append(f'<div class="alt">alt: “{_e(_clip(image.get("alt")))}”</div>')
        key = str(image.get("existance_key") or "")
        short = key if len(key) <= 24 else f"{key[:8]}…{key[-8:]}"
        lines.append(f'<div class="key" title="{_e(key)}">{_e(partner)} key {_e(short)}</div>')
        alt = str(image.get("alt") or blob)
    else:
        lines.append(f'<div class="pos">{_e(blob.rsplit("/", 1)[-1])}</div>')
        alt = blob
    for entry in others:
        kind = _kind(entry.get("type")) if entry.get("type") is not None else "no type"
        colour = _colour(entry.get("colorId"))
        ident = str(entry.get("imageId") or "")[:8]
        css = ' class="bad"' if str(entry.get("outcome")) in PROBLEM_OUTCOMES else ""
        lines.append(f"<div{css}>{_e(entry.get('partner'))}: {_e(entry.get('outcome'))} · id {_e(ident)}… · "
                     f"{_e(kind)} · {_e(colour)}</div>")
        if entry.get("reason") and str(entry.get("outcome")) != "delivered":
            lines.append(f'<div class="bad">{_e(_clip(_why(entry)))}</div>')
    verdict = _verdict_of(in_set, others)
    lines += _verdict_lines(verdict)
    lines.append(f'<div class="blob">{_e(blob)}</div>')
    lines.append('<div class="gone-note">Not loaded: the blob was deleted or renamed since, storage cannot be '
                 "reached, or the link expired.</div>")
    rendition, where = verdict.get("rendition"), verdict.get("rendition_container")
    # what the partner was sent: the rendition, where one was (a browser shows no TIFF, HEIC or BMP original)
    src = url(str(where), str(rendition)) if rendition and where else url(card.container, blob)
    return (f'<figure class="{"img bad" if bad else "img"}" data-blob="{_e(blob)}">'
            f'<div class="thumb"><img src="{_e(src)}" alt="{_e(_clip(alt))}" loading="lazy"></div>'
            f"<figcaption>{''.join(lines)}</figcaption></figure>")


def _verdict_of(in_set: tuple[str, dict[str, Any], dict[str, Any]] | None,
                others: list[dict[str, Any]]) -> dict[str, Any]:
    """The image's web verdict as the ledger kept it (``runs.ledger.web_summary``); {} when none was."""
    for kept in ([in_set[2]] if in_set is not None else []) + others:
        if isinstance(kept.get("image"), dict):
            return dict(kept["image"])
    return {}


def _verdict_lines(verdict: dict[str, Any]) -> list[str]:
    """What the image really is and what was sent for it: ``TIFF 640x480 RGB · 901 KB``, its rendition and
    why, the type its download was served with, a warning when it went although not web-ready."""
    if not verdict:
        return []
    if verdict.get("checked") is False:
        return ['<div class="verdict">not checked yet (sent as it is)</div>']
    size = int(verdict.get("bytes") or 0)
    what = " ".join(str(verdict.get(k)) for k in ("format", "pixels", "mode") if verdict.get(k))
    lines = [f'<div class="verdict">{_e(what)} · {_e(_size(size))}</div>']
    if verdict.get("sent") == "rendition":
        lines.append(f'<div class="verdict">sent as its web rendition: {_e(_clip(verdict.get("why")))}</div>')
    if verdict.get("served_as"):
        lines.append(f'<div class="verdict">served as {_e(verdict.get("served_as"))} (stored type wrong or '
                     "missing)</div>")
    if verdict.get("warning"):
        lines.append(f'<div class="bad">not web-ready, sent as it is ({_e(_clip(verdict.get("warning")))}): '
                     f'{_e(_clip(verdict.get("why")))}</div>')
    return lines


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{max(1, round(size / 1024))} KB"


def _kind(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{TYPE_NAMES.get(value, 'unknown')} (type {value})"
    return "type ?"


def _colour(value: Any) -> str:
    return f"colour {value}" if value not in (None, "") else "no colour"


def _reason(entry: dict[str, Any]) -> str:
    code = f"HTTP {entry['status_code']}: " if entry.get("status_code") else ""
    return _clip(code + _why(entry))


def _why(entry: dict[str, Any]) -> str:
    """An entry's cause and its own detail (runs kept before causes were split have the reason only)."""
    reason, detail = str(entry.get("reason") or ""), entry.get("detail")
    return f"{reason}: {detail}" if detail else reason


def _by_cause(skipped: list[dict[str, Any]]) -> list[tuple[str, int, list[dict[str, Any]]]]:
    """Skipped blobs grouped by cause, with the first few of each: at most MAX_SKIPPED rows on the page."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in skipped:
        groups.setdefault(str(entry.get("reason")), []).append(entry)
    out, rows = [], 0
    for cause, entries in groups.items():
        if rows >= MAX_SKIPPED:
            break
        first = entries[:max(1, min(20, MAX_SKIPPED - rows))]
        rows += len(first)
        out.append((cause, len(entries), first))
    return out


def _clip(value: Any, limit: int = MAX_TEXT) -> str:
    """A partner's reason or a note, shortened: redacted first (a report kept by an older version, or one
    that names a signature nobody registered, must not reach the page), then cut."""
    text = redact("" if value is None else str(value))
    return text if len(text) <= limit else text[:limit] + "…"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _slug(outcome: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in outcome)


def _hours(ttl: timedelta) -> str:
    hours = ttl.total_seconds() / 3600
    return "1 hour" if hours == 1 else f"{hours:g} hours"


_STYLE = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--muted:#59636e;--line:#d1d9e0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#f6f8fa}
header{background:#fff;border-bottom:1px solid var(--line);padding:18px 28px}
h1{margin:0 0 10px;font-size:21px}
h2{margin:0 0 6px;font-size:16px}
h2 .run{font-weight:400;color:var(--muted);font-size:13px;margin-left:8px}
main{padding:18px 28px}
table.facts{border-collapse:collapse;font-size:13px}
table.facts th{text-align:left;color:var(--muted);font-weight:500;padding:1px 16px 1px 0;vertical-align:top;
  white-space:nowrap}
table.facts td{padding:1px 0;overflow-wrap:anywhere}
.note{background:#fff8c5;border:1px solid #d4a72c66;border-radius:6px;padding:7px 12px;margin:10px 0 0;font-size:13px}
.legend{margin:10px 0 0;color:var(--muted)} .count-bad{color:var(--bad);font-weight:600}
section.product{background:#fff;border:1px solid var(--line);border-radius:8px;margin:0 0 16px;padding:12px 16px}
section.product.problem{border:2px solid var(--bad);box-shadow:0 0 0 3px #cf222e1f}
.badge{display:inline-block;border-radius:12px;padding:1px 10px;font-size:12px;font-weight:600;margin:0 6px 4px 0}
.badge.delivered{background:#dafbe1;color:var(--ok)}
.badge.failed,.badge.rejected,.badge.not-sent{background:var(--bad);color:#fff}
.badge.deferred,.badge.queued{background:#fff8c5;color:var(--warn)}
.badge.skipped{background:#eaeef2;color:var(--muted)}
.reason{margin:3px 0;font-size:13px;overflow-wrap:anywhere} .bad{color:var(--bad)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px;margin-top:10px}
figure{margin:0;border:1px solid var(--line);border-radius:6px;overflow:hidden;background:#fff}
figure.bad{border:2px solid var(--bad)}
.thumb{height:150px;display:flex;align-items:center;justify-content:center;
  background:repeating-conic-gradient(#eef1f4 0% 25%,#fff 0% 50%) 50%/16px 16px}
.thumb img{width:100%;height:100%;object-fit:contain}
figcaption{padding:7px 9px;font-size:12px;color:var(--muted);overflow-wrap:anywhere}
figcaption .pos{font-weight:600;color:#1f2328;font-size:13px}
.blob{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11px;color:#1f2328}
.gone-note{display:none;color:var(--bad)} figure.gone .gone-note{display:block} figure.gone .thumb{background:#ffebe9}
ul.skipped-here{margin:8px 0 0;padding-left:18px;color:var(--muted);font-size:12px}
section.skipped{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 16px}
section.skipped td{padding:2px 12px 2px 0;vertical-align:top;font-size:12px}
section.skipped h3{font-size:14px;margin:12px 0 4px} section.skipped .count{color:var(--muted);font-weight:400}
footer{color:var(--muted);font-size:12px;margin-top:16px}
form.resubmit{margin:12px 0 0} form.resubmit span{color:var(--muted);font-size:12px;margin-left:10px}
form.resubmit button{font:inherit;font-weight:600;padding:5px 14px;border-radius:6px;border:1px solid var(--bad);
  background:#fff;color:var(--bad);cursor:pointer}
"""

# The page's one script. Listeners capture every thumbnail's load and error on the document (those events
# do not bubble, but capture sees them), registered before the body is parsed, so no image is missed and no
# element carries an inline handler: a CSP that allows this script by its hash allows nothing else.
_SCRIPT = """
(function(){function seen(e){var i=e.target;if(!i||i.tagName!=="IMG")return;var f=i.closest("figure");
if(!f)return;var ok=e.type==="load";i.setAttribute("data-natural-width",ok?String(i.naturalWidth):"0");
f.setAttribute("data-loaded",ok?"yes":"no");if(!ok)f.classList.add("gone")}
document.addEventListener("load",seen,true);document.addEventListener("error",seen,true)})();
"""


def _source_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


# No 'unsafe-inline': the one style sheet and the one script run by their hashes, so markup that escaped
# escaping (a bug) still runs no script and loads nothing but images. ``frame-ancestors`` only works as an
# HTTP header (a <meta> policy ignores it): the HTTP page sends ``CONTENT_SECURITY_POLICY``, a page written
# to a file carries ``PAGE_POLICY``.
PAGE_POLICY = (f"default-src 'none'; img-src https: http:; style-src {_source_hash(_STYLE)}; "
               f"script-src {_source_hash(_SCRIPT)}; base-uri 'none'; form-action 'none'")
# The deployed app's page may post its one form (``resubmit_form``) to its own origin, and nowhere else.
SERVED_POLICY = PAGE_POLICY.replace("form-action 'none'", "form-action 'self'")
CONTENT_SECURITY_POLICY = SERVED_POLICY + "; frame-ancestors 'none'"

_HEAD = "\n".join([
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta http-equiv="Content-Security-Policy" content="{policy}">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    '<meta name="referrer" content="no-referrer">',
    "<title>{title}</title>",
    f"<style>{_STYLE}</style>",
    f"<script>{_SCRIPT}</script>",
    "</head><body>",
])
