"""Opening the images account: a connection string locally, a managed identity in Azure.

The one place that builds storage clients. Blob and queue clients share one credential and the same
retry policy, so a storage outage surfaces at the same pace everywhere.
"""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from ..config.settings import StorageSettings
from ..errors import ConfigError, ImageSyncError

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient

# The SDK's ExponentialRetry counts a retry before it sleeps, so "initial 1 s, base 3, 3 retries" waits about
# 4 + 10 + 28 s: a storage outage took 42 s per call to surface, 94 s for a run. ``BoundedRetry`` waits
# 0.5, 1.5 and 4.5 s (each +-20 %) and starts no retry that would begin later than ``budget`` seconds after
# the call began: storage that refuses connections fails a call within about ``CALL_BUDGET_SECONDS``; one
# that accepts and never answers within ``read_timeout`` plus that. A blip of a few seconds is ridden out.
CALL_BUDGET_SECONDS = 10.0
CLIENT_DEFAULTS = {"retry_total": 3, "initial_backoff": 0.5, "increment_base": 3, "budget": CALL_BUDGET_SECONDS,
                   "connection_timeout": 5, "read_timeout": 20}


class _Bounded:
    """Mixed into the storage SDK's ``ExponentialRetry`` (the blob and queue packages each have one)."""

    budget: float = CALL_BUDGET_SECONDS
    initial_backoff: float
    increment_base: float

    def configure_retries(self, request: Any) -> dict[str, Any]:
        settings: dict[str, Any] = super().configure_retries(request)  # type: ignore[misc]
        settings["started"] = time.monotonic()
        return settings

    def increment(self, settings: dict[str, Any], request: Any, response: Any = None, error: Any = None) -> bool:
        if not super().increment(settings, request, response=response, error=error):  # type: ignore[misc]
            return False
        # The SDK has already counted this retry: count 1 is the first.
        backoff = self.initial_backoff * self.increment_base ** (settings["count"] - 1) * random.uniform(0.8, 1.2)
        settings["backoff"] = backoff
        return bool(time.monotonic() + backoff - settings["started"] < self.budget)

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return float(settings.pop("backoff", 0.0))


def _retry_policy(policy: Any, opts: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    opts = {**CLIENT_DEFAULTS, **opts}
    bounded = type(f"Bounded{policy.__name__}", (_Bounded, policy), {"budget": opts.pop("budget")})
    retry = bounded(initial_backoff=opts.pop("initial_backoff"), increment_base=opts.pop("increment_base"),
                    retry_total=opts.pop("retry_total"))
    return retry, opts


def default_credential() -> Any:
    """The managed identity in Azure; the developer's ``az login`` on a workstation."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def blob_service(storage: StorageSettings, credential: Any = None, **options: Any) -> BlobServiceClient:
    """A ``BlobServiceClient`` for the images account.

    ``credential`` lets tests and tools pass a token credential; in Azure it defaults to
    ``DefaultAzureCredential`` (the app's managed identity). ``options`` override the client's retry and
    timeout settings (``retry_total``, ``connection_timeout``...) or go to the SDK client (e.g.
    ``connection_verify`` for a local TLS emulator). Nothing connects until the first request.
    """
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    retry, opts = _retry_policy(ExponentialRetry, options)
    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string, retry_policy=retry, **opts)
    if not storage.account_url:
        raise ConfigError("IMAGES_STORAGE is not set")  # Settings never lets this happen
    return BlobServiceClient(storage.account_url, credential=credential or default_credential(),
                             retry_policy=retry, **opts)


def queue_client(storage: StorageSettings, queue: str, credential: Any = None, *, needed_for: str = "",
                 **options: Any) -> QueueClient:
    """A queue on the images account, base64-encoded as the Functions queue trigger expects."""
    from azure.storage.queue import ExponentialRetry, QueueClient, TextBase64EncodePolicy

    retry, opts = _retry_policy(ExponentialRetry, options)
    encode = TextBase64EncodePolicy()
    if storage.connection_string:
        return QueueClient.from_connection_string(storage.connection_string, queue, message_encode_policy=encode,
                                                  retry_policy=retry, **opts)
    if not storage.queue_url:
        why = f", {needed_for}" if needed_for else ""
        raise ConfigError("IMAGES_STORAGE__queueServiceUri is not set: expected the queue endpoint of the images "
                          f"account (https://<account>.queue.core.windows.net){why}")
    return QueueClient(storage.queue_url, queue, credential=credential or default_credential(),
                       message_encode_policy=encode, retry_policy=retry, **opts)


def ensure_queue(client: QueueClient) -> None:
    """Create the queue if it does not exist yet (the deploy creates it in Azure)."""
    from azure.core.exceptions import ResourceExistsError

    try:
        client.create_queue()
    except ResourceExistsError:
        pass


# Settings for a check that must answer within seconds (doctor, the CLI's preflight): one retry, short
# timeouts, so storage that cannot be reached is said so within a few seconds.
QUICK = {"retry_total": 1, "initial_backoff": 1, "increment_base": 2, "budget": 5.0, "connection_timeout": 5,
         "read_timeout": 20}
HISTORY_TIMEOUTS = {"retry_total": 1, "initial_backoff": 1, "increment_base": 2, "budget": 5.0,
                    "connection_timeout": 5, "read_timeout": 10}


class StorageUnreachable(ImageSyncError):
    """The images account could not be reached (DNS, network, firewall): maybe transient."""


def storage_problem(exc: Exception, container: ContainerClient) -> tuple[bool, str]:
    """``(is_configuration, message)`` for a storage error, naming the setting to check."""
    from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError, ServiceRequestError

    code = getattr(exc, "error_code", None) or ""
    where = container.url.split("?")[0]
    if isinstance(exc, ResourceNotFoundError) or code == "ContainerNotFound":
        return True, (f"IMAGES_CONTAINER={container.container_name!r} does not exist at {where}: create the "
                      "container or fix IMAGES_CONTAINER")
    if isinstance(exc, ServiceRequestError):
        return False, (f"cannot reach the storage account at {where} ({_first_line(exc)}): check IMAGES_STORAGE "
                       "(the connection string or account endpoint) and the network")
    if isinstance(exc, ClientAuthenticationError) or getattr(exc, "status_code", None) in (401, 403):
        return True, (f"the storage account refused these credentials ({code or 'HTTP 403'}) at {where}: check "
                      "IMAGES_STORAGE (a wrong account key, an identity without 'Storage Blob Data Reader', or a "
                      "firewall that does not admit this machine)")
    return False, f"storage at {where}: {type(exc).__name__}: {_first_line(exc)}"


def check_container(storage: StorageSettings, credential: Any = None) -> None:
    """Before any work: the container exists and these credentials may list it. Raises ``ConfigError``
    (exit 2: fix a setting) or ``StorageUnreachable`` (exit 1: maybe transient), within about 10 s."""
    from azure.core.exceptions import AzureError

    service = blob_service(storage, credential, **QUICK)
    container = service.get_container_client(storage.container)
    try:
        next(container.list_blobs(results_per_page=1).by_page(), None)
    except AzureError as exc:
        config, message = storage_problem(exc, container)
        raise (ConfigError if config else StorageUnreachable)(message) from exc
    finally:
        service.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
