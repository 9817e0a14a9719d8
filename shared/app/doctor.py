"""``image-sync doctor``: is this installation able to sync? One line per check, worst first to fix.

Each check is a small function returning ``(status, message)``; it proves what it can from here and says
so honestly where it cannot (partners download from the public internet, which this machine may not be).
Checks never change anything: no blob is written, no partner record is sent.
"""
from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import requests

from ..catalog.container import Catalog
from ..catalog.records import ImageRecord
from ..catalog.web import CONVERT, OFF, problem_reason, served_type
from ..config.settings import HttpSettings, Settings
from ..domain import Partner
from ..errors import ConfigError, ImageSyncError, PartnerError
from ..imaging.stage import Unchecked, WebStage
from ..partners.traede import TraedeClient
from ..partners.wallie import WallieClient
from ..redact import redact
from ..storage.clients import QUICK, storage_problem
from ..storage.sas import SasSigner
from .factory import ImagesStorage, open_storage

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

OK, WARN, FAIL = "ok", "warn", "fail"
SAMPLE_SCAN_LIMIT = 5000  # blobs looked at to find one image for the SAS round trip
WEB_SAMPLE = 100  # images whose verdict the web check reads (a kept one, else 1-2 ranged reads each)
PUBLIC_NOTE = ("partners download from the public internet: if the storage account blocks public network "
               "access (firewall rules, private endpoint only), they cannot download either")

Result = tuple[str, str]


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str

    def line(self) -> str:
        return f"{self.status.upper():<4} {self.name}: {self.message}"


# -- the checks -----------------------------------------------------------------------------------------

def check_settings(env: Mapping[str, str] | None) -> tuple[Result, Settings | None]:
    try:
        settings = Settings.from_env(env)  # the layout compiles, or this says why
    except ConfigError as exc:
        return (FAIL, str(exc)), None
    partners = list(settings.partner_urls())
    if not partners:
        return (FAIL, "no partner is configured: set WALLIE_BASE_URL and/or TRAEDE_BASE_URL"), settings
    where = settings.storage.account_url or "connection string"
    return (OK, f"container {settings.storage.container!r} ({where}), partners: {', '.join(partners)}, "
                f"SAS valid {settings.sas_ttl_hours:g} h"), settings


def check_storage(container: ContainerClient) -> Result:
    """The container exists and this identity may list it."""
    from azure.core.exceptions import AzureError

    try:
        container.get_container_properties()
        next(container.list_blobs(results_per_page=1).by_page(), None)
    except AzureError as exc:
        return FAIL, _storage_problem(exc, container)
    return OK, f"container {container.container_name!r} exists and can be listed"


def check_layout(catalog: Catalog) -> Result:
    """How many image files of a sample fit IMAGE_PATH_PATTERN: a wrong layout skips them all."""
    from azure.core.exceptions import AzureError

    fit = missed = 0
    example = None
    try:
        for entry in itertools.islice(catalog.scan(), SAMPLE_SCAN_LIMIT):
            if isinstance(entry, ImageRecord):
                fit += 1
            elif entry.layout_miss:
                missed += 1
                example = example or entry.blob_name
    except AzureError as exc:
        return FAIL, _storage_problem(exc, catalog.container)
    pattern = catalog.layout.pattern
    if fit + missed == 0:
        return WARN, f"no image file among the first {SAMPLE_SCAN_LIMIT} blobs to check IMAGE_PATH_PATTERN with"
    summary = f"{fit} of {fit + missed} image files in a sample fit IMAGE_PATH_PATTERN {pattern!r}"
    if fit == 0:
        return FAIL, f"{summary}: none does (e.g. {example!r}); set IMAGE_PATH_PATTERN to match the blob names"
    if missed > fit:
        return WARN, f"{summary}: most do not (e.g. {example!r}); check IMAGE_PATH_PATTERN"
    return OK, summary + (f" ({missed} do not, e.g. {example!r})" if missed else "")


def check_partner_codes(container: ContainerClient, name: str) -> Result:
    """PARTNER_CODES_FILE can be read and parsed (a bad one stops every sync before it sends anything)."""
    from ..catalog import partner_codes

    try:
        codes = partner_codes.load(container, name)
    except ConfigError as exc:
        return FAIL, str(exc)
    return OK, (f"{partner_codes.SETTING} {name!r}: {len(codes.items)} items and {len(codes.colours)} colours "
                "mapped")


def check_history(service: BlobServiceClient, name: str) -> Result:
    """RUN_HISTORY_CONTAINER can be read (runs are kept there). Changes nothing: a missing container is
    created by the first run that keeps a report, which needs write access."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    container = service.get_container_client(name)
    try:
        next(container.list_blobs(results_per_page=1).by_page(), None)
    except ResourceNotFoundError:
        return WARN, (f"RUN_HISTORY_CONTAINER {name!r} does not exist yet: the first run creates it (the app "
                      "needs write access there), or create it yourself")
    except AzureError as exc:
        return FAIL, f"RUN_HISTORY_CONTAINER {name!r}: {_storage_problem(exc, container)}"
    return OK, f"RUN_HISTORY_CONTAINER {name!r} can be read: image-sync runs lists the kept runs"


def check_sas(catalog: Catalog, signer: SasSigner) -> Result:
    """Sign a URL for one real image and download its first bytes with no credentials but the SAS."""
    from azure.core.exceptions import AzureError

    try:
        image = next((e for e in itertools.islice(catalog.scan(), SAMPLE_SCAN_LIMIT)
                      if isinstance(e, ImageRecord)), None)
    except AzureError as exc:
        return FAIL, _storage_problem(exc, catalog.container)
    if image is None:
        return WARN, f"no image among the first {SAMPLE_SCAN_LIMIT} blobs to test a SAS URL with"
    try:
        url = signer.url(image.blob_name)
    except AzureError as exc:  # identity mode: the user-delegation key
        return FAIL, (f"cannot sign a SAS URL: {_first_line(exc)} (an identity needs the 'Storage Blob "
                      "Delegator' role on the account, and 'Storage Blob Data Reader' to read)")
    host = urlsplit(url).hostname or ""
    try:
        with requests.get(url, headers={"Range": "bytes=0-1023"}, timeout=15, stream=True) as response:
            status, error = response.status_code, response.headers.get("x-ms-error-code", "")
            got = len(response.raw.read(1024)) if response.ok else 0
    except requests.RequestException as exc:
        return FAIL, f"could not download {image.blob_name!r} from here ({type(exc).__name__}); {PUBLIC_NOTE}"
    if status not in (200, 206):
        hint = PUBLIC_NOTE if error == "AuthorizationFailure" or status == 403 else "the SAS was refused"
        return FAIL, f"SAS download of {image.blob_name!r} answered HTTP {status} {error}: {hint}"
    if _is_private(host):
        return WARN, (f"downloaded {got} bytes of {image.blob_name!r} with the SAS alone, but {host} is a "
                      f"private address; {PUBLIC_NOTE}")
    kind = "user-delegation" if signer.uses_delegation_key else "account-key"
    return OK, (f"downloaded {got} bytes of {image.blob_name!r} from this machine with the {kind} SAS "
                f"alone (read-only, this blob, {signer.ttl.total_seconds() / 3600:g} h)")


def check_wallie(settings: Settings) -> Result:
    if settings.wallie is None:
        return OK, "not configured (WALLIE_BASE_URL is not set)"
    client = WallieClient.from_settings(settings.wallie, _quick_http(settings.http), pool_size=1)
    try:
        client.check_token()
    except ImageSyncError as exc:
        return FAIL, _partner_problem(exc)
    finally:
        client.close()
    return OK, f"token issued by {settings.wallie.base_url} for tenant {settings.wallie.tenant!r}"


def check_traede(settings: Settings) -> Result:
    """An empty product list (see ``TraedeClient.check_credentials``): 422, not 401, proves the credentials."""
    if settings.traede is None:
        return OK, "not configured (TRAEDE_BASE_URL is not set)"
    client = TraedeClient.from_settings(settings.traede, _quick_http(settings.http), pool_size=1)
    try:
        status = client.check_credentials()
    except ImageSyncError as exc:
        return FAIL, _partner_problem(exc)
    finally:
        client.close()
    return OK, (f"{settings.traede.base_url} accepted the access token and app key (HTTP {status} to an "
                "empty product list, which changes nothing)")


# -- running them ---------------------------------------------------------------------------------------

def check_web(storage: ImagesStorage, settings: Settings) -> Result:
    """How many of a sample of images are not web-ready, and what becomes of them under WEB_IMAGES. Reads
    the kept verdicts (and the headers of images without one); writes no tag and makes no rendition."""
    from azure.core.exceptions import AzureError

    policy = settings.web
    stage = storage.web or WebStage(storage.container, storage.service.get_container_client(
        policy.renditions_container), replace(policy, mode=CONVERT), lambda name: name)
    sampled = kept = needing = converted = retyped = unchecked = 0
    broken: list[tuple[str, str]] = []
    kinds: dict[str, int] = {}
    try:
        for entry in itertools.islice(storage.catalog.scan(), SAMPLE_SCAN_LIMIT):
            if not isinstance(entry, ImageRecord):
                continue
            sampled += 1
            kept += entry.verdict is not None
            try:
                verdict = stage.look(entry)
            except Unchecked:
                unchecked += 1
            else:
                if not verdict.ok:
                    broken.append((entry.blob_name, problem_reason(verdict.problem or "notimage").split(":")[0]))
                elif why := policy.not_web_ready(verdict, entry.size):
                    needing += 1
                    converted += verdict.rendition == policy.fingerprint
                    for kind in _web_kinds(why, verdict.format or "?"):
                        kinds[kind] = kinds.get(kind, 0) + 1
                elif served_type(entry.blob_name, entry.content_type, verdict):
                    retyped += 1
            if sampled >= WEB_SAMPLE:
                break
    except AzureError as exc:
        return FAIL, _storage_problem(exc, storage.container)
    if sampled == 0:
        return WARN, f"no image among the first {SAMPLE_SCAN_LIMIT} blobs to check"
    parts = []
    if broken:
        name, cause = broken[0]
        parts.append(f"{len(broken)} cannot be decoded (e.g. {name!r}: {cause})")
    if needing:
        listed = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
        parts.append(f"{needing} need a web rendition ({listed}; {converted} made already)")
    summary = f"{len(broken) + needing} of {sampled} sampled images are not web-ready"
    summary += f": {'; '.join(parts)}" if parts else ""
    if retyped:
        summary += f"; {retyped} stored with a wrong or no Content-Type (served with their real type)"
    if unchecked:
        summary += f"; {unchecked} could not be checked"
    if policy.on and storage.catalog.tags_refused:
        return WARN, (f"{summary}; the verdicts (blob index tags) cannot be listed, so images are sent unchecked: "
                      "give the app's identity a role with blobs/tags/read and write on the container: the deploy's "
                      "Image Sync Image Reader and Tagger, or Storage Blob Data Owner (docs/images.md)")
    if policy.mode == OFF:
        return (WARN, f"{summary}; WEB_IMAGES=off sends them as they are") if broken or needing else (OK, summary)
    summary += f" ({kept} verdicts kept, {sampled - kept} read now)"
    if broken:
        return WARN, f"{summary}; those that cannot be decoded are skipped: upload them again"
    if needing and policy.mode != CONVERT:
        return WARN, f"{summary}; WEB_IMAGES=check sends them as they are"
    return OK, summary + ("; their renditions are sent in their place" if needing else "")


def _web_kinds(why: list[str], fmt: str) -> list[str]:
    """What makes an image not web-ready, in a word each: its format, CMYK, over a limit."""
    out = []
    for reason in why:
        if "WEB_MAX_SIDE" in reason:
            out.append("over WEB_MAX_SIDE")
        elif "WEB_MAX_MEGABYTES" in reason:
            out.append("over WEB_MAX_MEGABYTES")
        elif "colours" in reason:
            out.append(reason.split(" ", 1)[0])  # CMYK, YCCK
        else:
            out.append(fmt)
    return out


def run(env: Mapping[str, str] | None = None, *, credential: Any = None,
        on_result: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in order; storage checks are skipped when storage cannot be opened at all."""
    results: list[Check] = []

    def record(name: str, result: Result) -> Check:
        check = Check(name, *result)
        results.append(check)
        if on_result:
            on_result(check)
        return check

    result, settings = check_settings(env)
    record("settings", result)
    if settings is None:
        return results
    storage = open_storage(settings, credential, page_size=1000, **QUICK)  # answers within seconds
    try:
        if record("storage", _guard(lambda: check_storage(storage.container))).status == FAIL:
            record("layout", (WARN, "not tried: the container cannot be read"))
            record("sas", (WARN, "not tried: the container cannot be read"))
            record("web", (WARN, "not tried: the container cannot be read"))
        else:
            record("layout", _guard(lambda: check_layout(storage.catalog)))
            codes_file = settings.partner_codes_file
            if codes_file:
                record("codes", _guard(lambda: check_partner_codes(storage.container, codes_file)))
            record("sas", _guard(lambda: check_sas(storage.catalog, storage.signer)))
            record("web", _guard(lambda: check_web(storage, settings)))
            history = settings.run_history_container
            if history:
                record("history", _guard(lambda: check_history(storage.service, history)))
    finally:
        storage.close()
    record(Partner.WALLIE, _guard(lambda: check_wallie(settings)))
    record(Partner.TRAEDE, _guard(lambda: check_traede(settings)))
    return results


def main(env: Mapping[str, str] | None, out: TextIO, *, credential: Any = None) -> int:
    secrets: list[str] = []
    try:
        secrets = Settings.from_env(env).secrets()
    except ConfigError:
        pass

    def show(check: Check) -> None:
        print(redact(check.line(), secrets), file=out, flush=True)

    results = run(env, credential=credential, on_result=show)
    return 1 if any(c.status == FAIL for c in results) else 0


# -- helpers --------------------------------------------------------------------------------------------

def _guard(check: Callable[[], Result]) -> Result:
    """A check that crashes is a failed check with its reason, never a traceback instead of a verdict."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - doctor reports every problem as a line
        return FAIL, f"{type(exc).__name__}: {_first_line(exc)}"


def _storage_problem(exc: Exception, container: ContainerClient) -> str:
    return storage_problem(exc, container)[1]


def _partner_problem(exc: ImageSyncError) -> str:
    if isinstance(exc, PartnerError):
        body = " ".join((exc.response_body or "").split())[:200]
        return exc.message + (f" ({body})" if body else "")
    return str(exc)


def _quick_http(http: HttpSettings) -> HttpSettings:
    """Doctor answers within seconds: fewer retries and a shorter overall limit than a sync."""
    return HttpSettings(timeout_seconds=min(http.timeout_seconds, 15), max_retries=min(http.max_retries, 1),
                        backoff_seconds=min(http.backoff_seconds, 1), max_retry_seconds=min(http.max_retry_seconds, 30))


def _is_private(host: str) -> bool:
    if ".privatelink." in host:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_private and not address.is_loopback


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
