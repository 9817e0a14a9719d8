"""All app settings, read and checked in one place.

The setting names are the public contract: the README, ``local.settings.json.example`` and
``deploy/deploy.sh`` use the same ones. Nothing else in the package reads ``os.environ``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import overload
from urllib.parse import urlparse

from ..catalog import web
from ..catalog.layout import PathLayout
from ..catalog.web import DEFAULT_POLICY, WebPolicy
from ..domain import Partner
from ..errors import ConfigError

DEFAULT_CONTAINER = "product-images"
DEFAULT_PATH_PATTERN = "{item_id}/{color_id}/{name}|{item_id}/{name}"
DEFAULT_SHARD_QUEUE = "image-sync-shards"
DEFAULT_PRODUCT_QUEUE = "image-sync-products"
DEFAULT_STATE_CONTAINER = "image-sync-state"
DEFAULT_RUN_HISTORY_CONTAINER = "image-sync-runs"
DEFAULT_RENDITIONS_CONTAINER = "image-sync-renditions"
DEFAULT_WEB_FORMATS = "jpeg,png,gif,webp"
MAX_SAS_TTL_HOURS = 168  # user-delegation keys live at most 7 days
KEY_VAULT_PREFIX = "@Microsoft.KeyVault("


@dataclass(frozen=True)
class StorageSettings:
    """Where the images live: a connection string, or an identity-based account URL."""

    connection_string: str | None = None
    account_url: str | None = None
    queue_url: str | None = None
    container: str = DEFAULT_CONTAINER

    @property
    def uses_identity(self) -> bool:
        return self.connection_string is None


@dataclass(frozen=True)
class WallieSettings:
    base_url: str
    tenant: str
    username: str
    password: str = field(repr=False)
    batch_size: int = 500


@dataclass(frozen=True)
class TraedeSettings:
    base_url: str
    access_token: str = field(repr=False)
    app_key: str = field(repr=False)
    payload_key: str = "products"
    color_attribute: str = "Color"
    use_sort_b2c: str = "auto"                 # "auto", "true" or "false" (see payloads.TraedeOptions)
    skip_if_no_variant_match: bool = False


@dataclass(frozen=True)
class HttpSettings:
    timeout_seconds: float = 30.0
    max_retries: int = 5
    backoff_seconds: float = 0.5
    max_retry_seconds: float = 120.0


DEFAULT_HTTP = HttpSettings()


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    path_pattern: str = DEFAULT_PATH_PATTERN
    sas_ttl_hours: float = 48.0
    sas_start_skew_minutes: float = 15.0
    wallie: WallieSettings | None = None
    traede: TraedeSettings | None = None
    http: HttpSettings = HttpSettings()
    sync_concurrency: int = 4
    sync_shard_products: int = 2000
    sync_shard_queue: str = DEFAULT_SHARD_QUEUE
    product_sync_queue: str = DEFAULT_PRODUCT_QUEUE
    product_sync_delay_seconds: float = 10.0
    product_lock_seconds: int = 60
    product_resend_seconds: float = 300.0
    full_sync_fence_seconds: int = 60
    sync_state_container: str = DEFAULT_STATE_CONTAINER
    partner_codes_file: str | None = None      # a CSV blob in the images container (partner_codes)
    run_history_container: str | None = DEFAULT_RUN_HISTORY_CONTAINER  # None: no run history
    run_history_days: int = 30
    log_level: str = "INFO"
    web: WebPolicy = DEFAULT_POLICY                   # WEB_* and RENDITION_*: what partners may be sent as it is
    layout: PathLayout = field(init=False, repr=False, compare=False)  # IMAGE_PATH_PATTERN, compiled once

    def __post_init__(self) -> None:
        object.__setattr__(self, "layout", PathLayout(self.path_pattern))

    def partner_urls(self) -> dict[Partner, str]:
        """Each configured partner's base URL (no secret in it), by the partner."""
        configured = ((Partner.WALLIE, self.wallie), (Partner.TRAEDE, self.traede))
        return {partner: s.base_url for partner, s in configured if s}

    def describe(self) -> str:
        """What a run works on, for its start line: never a secret."""
        where = self.storage.account_url or _endpoint_of(self.storage.connection_string or "")
        partners = ", ".join(f"{name} at {url}" for name, url in self.partner_urls().items()) or "none"
        return (f"container {self.storage.container!r} at {where}, partners: {partners}, "
                f"layout {self.path_pattern!r}")

    def secrets(self) -> list[str]:
        """Values that must never reach a log."""
        values = [self.wallie and self.wallie.password, self.traede and self.traede.access_token,
                  self.traede and self.traede.app_key]
        return [v for v in values if v]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting; raise ConfigError naming the first bad one."""
        r = _Reader(os.environ if env is None else env)
        return cls(
            storage=_storage(r),
            path_pattern=r.text("IMAGE_PATH_PATTERN", DEFAULT_PATH_PATTERN),  # compiled (and checked) as ``layout``
            sas_ttl_hours=r.number("SAS_TTL_HOURS", 48, low=0.1, high=MAX_SAS_TTL_HOURS,
                                   why="hours a partner has to download an image; at most 168 (7 days)"),
            sas_start_skew_minutes=r.number("SAS_START_SKEW_MINUTES", 15, low=0, high=60,
                                            why="minutes the SAS start is back-dated for clock skew"),
            wallie=_wallie(r),
            traede=_traede(r),
            http=HttpSettings(
                timeout_seconds=r.number("HTTP_TIMEOUT_SECONDS", 30, low=1, high=600),
                max_retries=r.integer("HTTP_MAX_RETRIES", 5, low=0, high=20),
                backoff_seconds=r.number("HTTP_RETRY_BACKOFF_SECONDS", 0.5, low=0, high=60),
                max_retry_seconds=r.number("HTTP_RETRY_MAX_SECONDS", 120, low=1, high=3600),
            ),
            sync_concurrency=r.integer("SYNC_CONCURRENCY", 4, low=1, high=64),
            sync_shard_products=r.integer("SYNC_SHARD_PRODUCTS", 2000, low=0, high=1_000_000),
            sync_shard_queue=_queue_name("SYNC_SHARD_QUEUE", r.text("SYNC_SHARD_QUEUE", DEFAULT_SHARD_QUEUE)),
            product_sync_queue=_queue_name("PRODUCT_SYNC_QUEUE", r.text("PRODUCT_SYNC_QUEUE", DEFAULT_PRODUCT_QUEUE)),
            product_sync_delay_seconds=r.number(
                "PRODUCT_SYNC_DELAY_SECONDS", 10, low=0, high=300,
                why="seconds an upload waits for the rest of its burst before its product goes to TRAEDE"),
            product_lock_seconds=r.integer("PRODUCT_LOCK_SECONDS", 60, low=15, high=60),
            product_resend_seconds=r.number(
                "PRODUCT_RESEND_SECONDS", 300, low=10, high=3600,
                why="seconds after a TRAEDE request of unknown outcome until its products are sent again: longer "
                    "than TRAEDE (and any gateway before it) may take to apply or drop a request"),
            full_sync_fence_seconds=r.integer("FULL_SYNC_FENCE_SECONDS", 60, low=15, high=60),
            sync_state_container=_container_name("SYNC_STATE_CONTAINER",
                                                 r.text("SYNC_STATE_CONTAINER", DEFAULT_STATE_CONTAINER)),
            partner_codes_file=_codes_file(r.text("PARTNER_CODES_FILE", None)),
            run_history_container=_run_history_container(r),
            run_history_days=r.integer("RUN_HISTORY_DAYS", 30, low=1, high=3650),
            log_level=r.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            web=_web(r),
        )


def _endpoint_of(connection_string: str) -> str:
    """The blob endpoint named by a connection string, without its key."""
    parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
    if parts.get("UseDevelopmentStorage", "").lower() == "true":
        return "the local storage emulator"
    if "BlobEndpoint" in parts:
        return parts["BlobEndpoint"].split("?")[0]
    return f"account {parts.get('AccountName', '?')}"


def _container_name(setting: str, name: str) -> str:
    if not (3 <= len(name) <= 63) or not all(c.islower() or c.isdigit() or c == "-" for c in name):
        raise ConfigError(f"{setting}={name!r} is not a valid container name: "
                          "expected 3-63 lowercase letters, digits and hyphens")
    return name


def _run_history_container(r: _Reader) -> str | None:
    """RUN_HISTORY_CONTAINER: where each run's report is kept; set but empty turns the history off."""
    raw = r.env.get("RUN_HISTORY_CONTAINER")
    if raw is not None and not raw.strip():
        return None
    name = _container_name("RUN_HISTORY_CONTAINER", r.text("RUN_HISTORY_CONTAINER", DEFAULT_RUN_HISTORY_CONTAINER))
    for other, default in (("IMAGES_CONTAINER", DEFAULT_CONTAINER), ("SYNC_STATE_CONTAINER", DEFAULT_STATE_CONTAINER)):
        if name == r.text(other, default):
            raise ConfigError(f"RUN_HISTORY_CONTAINER={name!r} is also {other}: expected a container of its own "
                              "for the run reports (default 'image-sync-runs'; empty turns the history off)")
    return name


def _web(r: _Reader) -> WebPolicy:
    """WEB_IMAGES and the limits and renditions that go with it (``catalog.web``)."""
    mode = r.choice("WEB_IMAGES", "CONVERT", tuple(m.upper() for m in web.MODES)).lower()
    raw_formats = r.text("WEB_FORMATS", DEFAULT_WEB_FORMATS)
    try:
        formats = web.parse_formats(raw_formats)
    except ValueError as exc:
        raise ConfigError(f"WEB_FORMATS={raw_formats!r} is invalid: {exc.args[0]!r} is not an image format; expected "
                          f"a comma-separated list of {', '.join(sorted(web.MEDIA_TYPES)).lower()}") from None
    if not formats:
        raise ConfigError(f"WEB_FORMATS={raw_formats!r} is invalid: expected at least one format, e.g. "
                          f"{DEFAULT_WEB_FORMATS}")
    max_side = r.integer("WEB_MAX_SIDE", 6000, low=256, high=65535)
    rendition_side = r.integer("RENDITION_MAX_SIDE", 3000, low=256, high=65535)
    if rendition_side > max_side:
        raise ConfigError(f"RENDITION_MAX_SIDE={rendition_side} is invalid: expected at most WEB_MAX_SIDE "
                          f"({max_side}): a rendition must itself be web-ready")
    rendition_format = r.choice("RENDITION_FORMAT", "JPEG", web.RENDITION_FORMATS)
    if rendition_format not in formats:
        raise ConfigError(f"RENDITION_FORMAT={rendition_format.lower()!r} is invalid: it is not one of WEB_FORMATS "
                          f"({raw_formats}): a rendition must itself be web-ready")
    renditions = _container_name("RENDITIONS_CONTAINER", r.text("RENDITIONS_CONTAINER", DEFAULT_RENDITIONS_CONTAINER))
    for other, default in (("IMAGES_CONTAINER", DEFAULT_CONTAINER), ("SYNC_STATE_CONTAINER", DEFAULT_STATE_CONTAINER),
                           ("RUN_HISTORY_CONTAINER", DEFAULT_RUN_HISTORY_CONTAINER)):
        if renditions == r.text(other, default):
            raise ConfigError(f"RENDITIONS_CONTAINER={renditions!r} is also {other}: expected a container of its own "
                              "for the web renditions (default 'image-sync-renditions')")
    return WebPolicy(
        mode=mode, formats=formats, max_side=max_side,
        max_bytes=int(r.number("WEB_MAX_MEGABYTES", 20, low=0.1, high=5000,
                               why="megabytes above which an image gets a web rendition") * 2**20),
        rendition_format=rendition_format, rendition_side=rendition_side,
        rendition_quality=r.integer("RENDITION_QUALITY", 85, low=30, high=100),
        renditions_container=renditions,
        budget_images=r.integer("RENDITION_BUDGET_IMAGES", 500, low=0, high=1_000_000),
        budget_bytes=int(r.number("RENDITION_BUDGET_MEGABYTES", 2048, low=0, high=1_000_000,
                                  why="megabytes of originals one run may download to convert") * 2**20),
        budget_seconds=r.number("RENDITION_BUDGET_SECONDS", 120, low=0, high=3600,
                                why="seconds one run may spend checking and converting images it has not seen"),
    )


def _storage(r: _Reader) -> StorageSettings:
    container = _container_name("IMAGES_CONTAINER", r.text("IMAGES_CONTAINER", DEFAULT_CONTAINER))
    conn = r.text("IMAGES_STORAGE", None)
    if conn:
        if "=" not in conn:
            raise ConfigError("IMAGES_STORAGE is not a storage connection string: expected "
                              "'UseDevelopmentStorage=true' or 'DefaultEndpointsProtocol=...;AccountName=...;"
                              "AccountKey=...'")
        return StorageSettings(connection_string=conn, container=container)
    url = r.text("IMAGES_STORAGE__blobServiceUri", None)
    account = r.text("IMAGES_STORAGE__accountName", None)
    if url:
        _require_url("IMAGES_STORAGE__blobServiceUri", url)
    elif account:
        url = f"https://{account}.blob.core.windows.net"
    else:
        raise ConfigError("IMAGES_STORAGE is not set: expected a connection string "
                          "('UseDevelopmentStorage=true' for Azurite), or IMAGES_STORAGE__blobServiceUri / "
                          "IMAGES_STORAGE__accountName for an identity-based connection")
    queue = r.text("IMAGES_STORAGE__queueServiceUri", None)
    if queue:
        _require_url("IMAGES_STORAGE__queueServiceUri", queue)
    if queue is None and account:
        queue = f"https://{account}.queue.core.windows.net"
    return StorageSettings(account_url=url.rstrip("/"), queue_url=queue, container=container)


def _queue_name(setting: str, name: str) -> str:
    # The Functions host adds "-poison" for failed messages, and that name must be valid too (<= 63).
    if not (3 <= len(name) <= 56) or not all(c.islower() or c.isdigit() or c == "-" for c in name) \
            or name[0] == "-" or name[-1] == "-" or "--" in name:
        raise ConfigError(f"{setting}={name!r} is not a valid queue name: expected 3-56 lowercase "
                          "letters, digits and single hyphens, starting and ending with a letter or digit")
    return name


def _wallie(r: _Reader) -> WallieSettings | None:
    base = r.text("WALLIE_BASE_URL", None)
    if not base:
        return None
    _require_url("WALLIE_BASE_URL", base)
    return WallieSettings(
        base_url=base.rstrip("/"),
        tenant=r.required("WALLIE_TENANT", "the tenant code supplied by Wair", "WALLIE_BASE_URL"),
        username=r.required("WALLIE_USERNAME", "the Wallie API user name", "WALLIE_BASE_URL"),
        password=r.required("WALLIE_PASSWORD", "the Wallie API password", "WALLIE_BASE_URL"),
        batch_size=r.integer("WALLIE_BATCH_SIZE", 500, low=1, high=1000),
    )


def _traede(r: _Reader) -> TraedeSettings | None:
    base = r.text("TRAEDE_BASE_URL", None)
    if not base:
        return None
    _require_url("TRAEDE_BASE_URL", base)
    return TraedeSettings(
        base_url=base.rstrip("/"),
        access_token=r.required("TRAEDE_ACCESS_TOKEN", "an access token issued for a TRAEDE API user",
                                "TRAEDE_BASE_URL"),
        app_key=r.required("TRAEDE_APP_KEY", "the TRAEDE API app key", "TRAEDE_BASE_URL"),
        payload_key=r.text("TRAEDE_PAYLOAD_KEY", "products"),
        color_attribute=r.text("TRAEDE_COLOR_ATTRIBUTE", "Color"),
        use_sort_b2c=r.choice("TRAEDE_USE_SORT_B2C", "AUTO", ("AUTO", "TRUE", "FALSE")).lower(),
        skip_if_no_variant_match=r.flag("TRAEDE_SKIP_IF_NO_VARIANT_MATCH", False),
    )


def _codes_file(name: str | None) -> str | None:
    if name is None:
        return None
    if name.startswith("/") or name.endswith("/") or len(name) > 1024:
        raise ConfigError(f"PARTNER_CODES_FILE={name!r} is invalid: expected the name of a CSV blob in "
                          "IMAGES_CONTAINER, e.g. _config/partner-codes.csv")
    return name


def _require_url(name: str, value: str) -> None:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{name}={value!r} is not a URL: expected https://host[/path]")


class _Reader:
    """Typed access to the environment; every failure names the setting."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    @overload
    def text(self, name: str, default: str) -> str: ...

    @overload
    def text(self, name: str, default: None) -> str | None: ...

    def text(self, name: str, default: str | None) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip():
            return default
        value = value.strip()
        if value.startswith(KEY_VAULT_PREFIX):
            raise ConfigError(f"{name} is an unresolved Key Vault reference ({value.split('(')[0]}(...)): "
                              "the Functions host could not read the secret; check that the app's managed "
                              "identity has 'Key Vault Secrets User' on the vault and the secret exists")
        return value

    def required(self, name: str, what: str, because: str) -> str:
        value = self.text(name, None)
        if value is None:
            raise ConfigError(f"{name} is not set: expected {what} (required because {because} is set)")
        return value

    def number(self, name: str, default: float, *, low: float, high: float, why: str = "") -> float:
        raw = self.text(name, None)
        if raw is None:
            return float(default)
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not (low <= value <= high):
            hint = f" ({why})" if why else ""
            raise ConfigError(f"{name}={raw!r} is invalid: expected a number from {low:g} to {high:g}{hint}")
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self.text(name, None)
        if raw is None:
            return default
        if not raw.lstrip("-").isdigit() or not (low <= int(raw) <= high):
            raise ConfigError(f"{name}={raw!r} is invalid: expected a whole number from {low} to {high}")
        return int(raw)

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, None)
        if raw is None:
            return default
        if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name}={raw!r} is invalid: expected true or false")
        return raw.lower() in ("true", "1", "yes")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name, None)
        if raw is None:
            return default
        if raw.upper() not in choices:
            raise ConfigError(f"{name}={raw!r} is invalid: expected one of {', '.join(choices)}")
        return raw.upper()
