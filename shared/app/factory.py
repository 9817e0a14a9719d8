"""Builds the engine and its parts from Settings: the one place triggers, CLI and benchmark share."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from ..catalog.container import Catalog
from ..coordination.state import StateContainer
from ..errors import ConfigError
from ..runs.history import RunHistory
from ..catalog.partner_codes import PartnerCodes
from ..partners.payloads import TraedeOptions
from ..coordination.product_queue import ProductQueue
from ..storage.sas import SasSigner
from ..config.settings import Settings
from ..engine.stopping import StopSignal
from ..storage.clients import HISTORY_TIMEOUTS, blob_service, default_credential, queue_client
from ..engine.sync import SyncEngine
from ..engine.target import Target
from ..partners.traede import TraedeClient
from ..partners.wallie import WallieClient


class Components:
    """Everything one run needs; ``close()`` releases the HTTP pools."""

    def __init__(self, settings: Settings, *, credential: Any = None, require_partner: bool = True,
                 wallie: Target | None = None, traede: Target | None = None,
                 stop: StopSignal | None = None):
        self.settings = settings
        self._codes: PartnerCodes | None = None  # PARTNER_CODES_FILE as last read (reused while unchanged)
        self.stop = stop or StopSignal()  # one stop for the engine, its lanes and every HTTP wait
        storage = settings.storage
        if credential is None and storage.uses_identity:
            credential = default_credential()  # one credential for every blob and queue client
        self.credential = credential
        self.layout = settings.layout
        self.service = blob_service(storage, credential)
        self.container = self.service.get_container_client(storage.container)
        self.catalog = Catalog(self.container, self.layout)
        self.signer = SasSigner(self.service, storage.container,
                                ttl=timedelta(hours=settings.sas_ttl_hours),
                                start_skew=timedelta(minutes=settings.sas_start_skew_minutes))
        pool = settings.sync_concurrency + 2
        self._owned: list[Any] = []
        if wallie is None and traede is None:
            if settings.wallie:
                wallie = WallieClient.from_settings(settings.wallie, settings.http, pool_size=pool, stop=self.stop)
                self._owned.append(wallie)
            if settings.traede:
                traede = TraedeClient.from_settings(settings.traede, settings.http, pool_size=pool, stop=self.stop)
                self._owned.append(traede)
            if require_partner and not (wallie or traede):
                raise ConfigError("no partner is configured: set WALLIE_BASE_URL (with WALLIE_TENANT, "
                                  "WALLIE_USERNAME, WALLIE_PASSWORD) and/or TRAEDE_BASE_URL (with "
                                  "TRAEDE_ACCESS_TOKEN, TRAEDE_APP_KEY)")
        self.engine = SyncEngine(
            self.catalog, self.signer.url, wallie=wallie, traede=traede,
            concurrency=settings.sync_concurrency,
            traede_options=TraedeOptions(settings.traede.color_attribute, settings.traede.use_sort_b2c,
                                         settings.traede.skip_if_no_variant_match) if settings.traede
            else TraedeOptions(),
            codes=self.partner_codes if settings.partner_codes_file else None,
            codes_file=settings.partner_codes_file,
            stop=self.stop,
        )
        # The run history has a client of its own with short timeouts and one retry: storage that hangs
        # costs a trigger invocation seconds, not minutes, after its work is done (the save never fails it).
        self._history_service = blob_service(storage, credential, **HISTORY_TIMEOUTS) \
            if settings.run_history_container else None
        self.history = RunHistory(self._history_service, settings.run_history_container,
                                  days=settings.run_history_days) \
            if self._history_service is not None and settings.run_history_container else None
        self.products = ProductQueue(
            self.engine, StateContainer(self.service, settings.sync_state_container),
            container=storage.container, queue=self.product_queue_client,
            delay_seconds=settings.product_sync_delay_seconds, lock_seconds=settings.product_lock_seconds,
            resend_seconds=settings.product_resend_seconds, fence_seconds=settings.full_sync_fence_seconds)

    def partner_codes(self) -> PartnerCodes:
        """PARTNER_CODES_FILE, read at the start of each run (a changed file applies from the next run)."""
        from ..catalog import partner_codes

        assert self.settings.partner_codes_file
        self._codes = partner_codes.load(self.container, self.settings.partner_codes_file, self._codes)
        return self._codes

    def product_queue_client(self) -> Any:
        return queue_client(self.settings.storage, self.settings.product_sync_queue, self.credential,
                            needed_for="needed to queue product syncs (PRODUCT_SYNC_QUEUE)")

    def park(self, queue: str, body: str) -> None:
        """Put a message in a queue of the images account (a poison queue: work retrying cannot cure)."""
        from ..storage.clients import ensure_queue

        client = queue_client(self.settings.storage, queue, self.credential)
        try:
            ensure_queue(client)
            client.send_message(body)
        finally:
            client.close()

    def abort(self) -> None:
        """Cut every partner request in flight (a stopping run whose grace period is over)."""
        for client in (self.engine.wallie, self.engine.traede):
            abort = getattr(client, "abort", None)
            if callable(abort):
                abort()

    def close(self) -> None:
        for client in self._owned:
            client.close()
        self.service.close()
        if self._history_service is not None:
            self._history_service.close()

    def __enter__(self) -> Components:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
