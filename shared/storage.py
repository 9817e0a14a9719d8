"""Opening the images account: a connection string locally, a managed identity in Azure."""
from __future__ import annotations

from typing import Any

from .settings import StorageSettings


def blob_service(storage: StorageSettings, credential: Any = None, **client_options: Any):
    """A ``BlobServiceClient`` for the images account.

    ``credential`` lets tests and tools pass a token credential; in Azure it defaults to
    ``DefaultAzureCredential`` (the app's managed identity). Nothing connects until the first request.
    ``client_options`` go to the SDK client (e.g. ``connection_verify`` for a local TLS emulator).
    """
    from azure.storage.blob import BlobServiceClient

    if storage.connection_string:
        return BlobServiceClient.from_connection_string(storage.connection_string, **client_options)
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return BlobServiceClient(storage.account_url, credential=credential, **client_options)
