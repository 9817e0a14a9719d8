"""Shared fixtures: one real Azurite per test session, a fresh container per test."""
from __future__ import annotations

import uuid

import pytest

from devtools.azurite import Azurite


@pytest.fixture(scope="session")
def azurite():
    with Azurite() as az:
        yield az


@pytest.fixture(scope="session")
def blob_service(azurite):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield service
    service.close()


@pytest.fixture
def container(blob_service):
    """A new empty container for one test (the app's default name is not reused between tests)."""
    client = blob_service.create_container(f"images-{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


@pytest.fixture
def storage_env(azurite, container) -> dict:
    """The settings a catalog-only run needs, pointing at this test's container."""
    return {"IMAGES_STORAGE": azurite.connection_string, "IMAGES_CONTAINER": container.container_name}
