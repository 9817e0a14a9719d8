"""Opening the images account: a connection string locally, a managed identity in Azure."""
from __future__ import annotations

from typing import Any

from .settings import StorageSettings

# The SDK's defaults wait 15 s, 18 s and 24 s between retries and 20 s for a connection: a storage outage
# in the middle of a listing took 80 s to surface. Three retries within about 20 s ride out a blip, and a
# run that cannot list ends (and says so) instead of eating the function's time limit.
CLIENT_DEFAULTS = {"retry_total": 3, "initial_backoff": 1, "increment_base": 3, "connection_timeout": 10,
                   "read_timeout": 60}


def blob_service(storage: StorageSettings, credential: Any = None, **options: Any):
    """A ``BlobServiceClient`` for the images account.

    ``credential`` lets tests and tools pass a token credential; in Azure it defaults to
    ``DefaultAzureCredential`` (the app's managed identity). ``options`` override the client's retry and
    timeout settings (``retry_total``, ``connection_timeout``...) or go to the SDK client (e.g.
    ``connection_verify`` for a local TLS emulator). Nothing connects until the first request.
    """
    from azure.storage.blob import BlobServiceClient, ExponentialRetry

    opts = {**CLIENT_DEFAULTS, **options}
    retry = ExponentialRetry(initial_backoff=opts.pop("initial_backoff"), increment_base=opts.pop("increment_base"),
                             retry_total=opts.pop("retry_total"))
    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string, retry_policy=retry, **opts)
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(storage.account_url, credential=credential, retry_policy=retry, **opts)
