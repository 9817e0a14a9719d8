"""Builds the engine and its parts from Settings: the one place triggers, CLI, doctor and benchmark share."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..catalog import partner_codes
from ..catalog.container import Catalog
from ..catalog.partner_codes import PartnerCodes
from ..config.settings import Settings
from ..coordination.product_queue import ProductQueue
from ..coordination.state import StateContainer
from ..engine.stopping import StopSignal
from ..engine.sync import SyncEngine
from ..engine.target import Target
from ..errors import ConfigError
from ..imaging.stage import WebStage
from ..partners.payloads import TraedeOptions
from ..partners.traede import TraedeClient
from ..partners.wallie import WallieClient
from ..runs.history import RunHistory
from ..storage.clients import HISTORY_TIMEOUTS, blob_service, default_credential, ensure_queue, queue_client
from ..storage.sas import SasSigner

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient

NO_PARTNER = ("no partner is configured: set WALLIE_BASE_URL (with WALLIE_TENANT, WALLIE_USERNAME, WALLIE_PASSWORD) "
              "and/or TRAEDE_BASE_URL (with TRAEDE_ACCESS_TOKEN, TRAEDE_APP_KEY)")


@dataclass
class ImagesStorage:
    """The images account as one run sees it: the client, the container, what it holds, how it is signed."""

    service: BlobServiceClient
    container: ContainerClient
    catalog: Catalog
    signer: SasSigner
    web: WebStage | None = None  # WEB_IMAGES: verdicts and renditions (None when off)

    def close(self) -> None:
        self.service.close()


def open_storage(settings: Settings, credential: Any = None, *, page_size: int | None = None,
                 **options: Any) -> ImagesStorage:
    """The images account's clients; ``options`` are the storage client's (``storage.QUICK`` for doctor)."""
    service = blob_service(settings.storage, credential, **options)
    container = service.get_container_client(settings.storage.container)
    ttl, skew = timedelta(hours=settings.sas_ttl_hours), timedelta(minutes=settings.sas_start_skew_minutes)
    signer = SasSigner(service, settings.storage.container, ttl=ttl, start_skew=skew)
    policy = settings.web
    catalog = Catalog(container, settings.layout, page_size=page_size, tags=policy.on)
    web = None
    if policy.on:
        renditions = SasSigner(service, policy.renditions_container, ttl=ttl, start_skew=skew)
        web = WebStage(container, service.get_container_client(policy.renditions_container), policy, renditions.url,
                       tags_listed=lambda: not catalog.tags_refused)
    return ImagesStorage(service, container, catalog, signer, web)


def traede_options(settings: Settings) -> TraedeOptions:
    t = settings.traede
    return TraedeOptions(t.color_attribute, t.use_sort_b2c, t.skip_if_no_variant_match) if t else TraedeOptions()


class Components:
    """Everything one run needs; ``close()`` releases the HTTP pools and storage clients."""

    def __init__(self, settings: Settings, *, credential: Any = None, require_partner: bool = True,
                 wallie: Target | None = None, traede: Target | None = None,
                 stop: StopSignal | None = None):
        self.settings = settings
        self.stop = stop or StopSignal()  # one stop for the engine, its lanes and every HTTP wait
        if credential is None and settings.storage.uses_identity:
            credential = default_credential()  # one credential for every blob and queue client
        self.credential = credential
        self.storage = open_storage(settings, credential)
        self.service, self.container, self.catalog = self.storage.service, self.storage.container, self.storage.catalog
        self._codes: PartnerCodes | None = None  # PARTNER_CODES_FILE as last read (reused while unchanged)
        self._owned: list[Target] = []
        if wallie is None and traede is None:
            wallie, traede = self._partners()
            if require_partner and not (wallie or traede):
                raise ConfigError(NO_PARTNER)
        self.engine = SyncEngine(
            self.catalog, self.storage.signer.url, wallie=wallie, traede=traede,
            concurrency=settings.sync_concurrency, traede_options=traede_options(settings),
            codes=self.partner_codes if settings.partner_codes_file else None,
            codes_file=settings.partner_codes_file, stop=self.stop, web=self.storage.web)
        # The run history has a client of its own with short timeouts and one retry: storage that hangs
        # costs a trigger invocation seconds, not minutes, after its work is done (the save never fails it).
        self._history_service = blob_service(settings.storage, credential, **HISTORY_TIMEOUTS) \
            if settings.run_history_container else None
        self.history = RunHistory(self._history_service, settings.run_history_container,
                                  days=settings.run_history_days) \
            if self._history_service is not None and settings.run_history_container else None
        self.product_queue = ProductQueue(
            self.engine, StateContainer(self.service, settings.sync_state_container),
            container=settings.storage.container, queue=self.product_queue_client,
            delay_seconds=settings.product_sync_delay_seconds, lock_seconds=settings.product_lock_seconds,
            resend_seconds=settings.product_resend_seconds, fence_seconds=settings.full_sync_fence_seconds)

    def _partners(self) -> tuple[Target | None, Target | None]:
        """The configured partners' clients, with pools one run's lanes can fill."""
        s, pool = self.settings, self.settings.sync_concurrency + 2
        wallie = WallieClient.from_settings(s.wallie, s.http, pool_size=pool, stop=self.stop) if s.wallie else None
        traede = TraedeClient.from_settings(s.traede, s.http, pool_size=pool, stop=self.stop) if s.traede else None
        self._owned = [c for c in (wallie, traede) if c is not None]
        return wallie, traede

    def partner_codes(self) -> PartnerCodes:
        """PARTNER_CODES_FILE, read at the start of each run (a changed file applies from the next run)."""
        assert self.settings.partner_codes_file
        self._codes = partner_codes.load(self.container, self.settings.partner_codes_file, self._codes)
        return self._codes

    def product_queue_client(self) -> QueueClient:
        return queue_client(self.settings.storage, self.settings.product_sync_queue, self.credential,
                            needed_for="needed to queue product syncs (PRODUCT_SYNC_QUEUE)")

    def park(self, queue: str, body: str) -> None:
        """Put a message in a queue of the images account (a poison queue: work retrying cannot cure)."""
        client = queue_client(self.settings.storage, queue, self.credential)
        try:
            ensure_queue(client)
            client.send_message(body)
        finally:
            client.close()

    def abort(self) -> None:
        """Cut every partner request in flight (a stopping run whose grace period is over)."""
        for client in (self.engine.wallie, self.engine.traede):
            if client is not None:
                client.abort()

    def close(self) -> None:
        for client in self._owned:
            client.close()
        self.storage.close()
        if self._history_service is not None:
            self._history_service.close()

    def __enter__(self) -> Components:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
