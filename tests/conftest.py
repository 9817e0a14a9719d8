"""Shared fixtures: one real Azurite per test session, a fresh container per test."""
from __future__ import annotations

import uuid

import pytest

from devtools.azurite import Azurite


@pytest.fixture(scope="session")
def indexed():
    """What the Functions host indexes, by function name. get_functions() may run only once per app
    object, so every test that inspects function_app.app shares this."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


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


# -- partners ---------------------------------------------------------------------------------------

WALLIE_CREDENTIALS = {"tenant": "TENANT", "username": "wallie-user", "password": "wallie-secret-pw"}
TRAEDE_CREDENTIALS = {"access_token": "traede-secret-token", "app_key": "traede-secret-appkey"}


@pytest.fixture
def wallie():
    from devtools.sandboxes import WallieSandbox

    with WallieSandbox(**WALLIE_CREDENTIALS) as sandbox:
        yield sandbox


@pytest.fixture
def traede():
    from devtools.sandboxes import TraedeSandbox

    with TraedeSandbox(**TRAEDE_CREDENTIALS) as sandbox:
        yield sandbox


@pytest.fixture
def sync_env(storage_env, wallie, traede) -> dict:
    """Settings for a real sync against Azurite and both sandboxes, with quick retries."""
    return {
        **storage_env,
        "WALLIE_BASE_URL": wallie.url, "WALLIE_TENANT": WALLIE_CREDENTIALS["tenant"],
        "WALLIE_USERNAME": WALLIE_CREDENTIALS["username"], "WALLIE_PASSWORD": WALLIE_CREDENTIALS["password"],
        "TRAEDE_BASE_URL": traede.url, "TRAEDE_ACCESS_TOKEN": TRAEDE_CREDENTIALS["access_token"],
        "TRAEDE_APP_KEY": TRAEDE_CREDENTIALS["app_key"],
        "HTTP_RETRY_BACKOFF_SECONDS": "0.01", "HTTP_TIMEOUT_SECONDS": "5",
    }


@pytest.fixture(autouse=True)
def _fresh_jobs_cache():
    """Trigger code caches its parts per worker; each test starts without them."""
    yield
    from shared.app import jobs

    jobs.reset()


def own_state(env: dict, monkeypatch=None, *, queue: bool = False, **extra: str) -> dict:
    """``env`` with a run history and a state container of the test's own (and a product queue with no delay,
    with ``queue``), plus ``extra`` settings; also put in the process environment when ``monkeypatch`` is
    given, for code that reads it there, as the triggers do."""
    suffix = uuid.uuid4().hex[:10]
    values = {**env, "RUN_HISTORY_CONTAINER": f"runs-{suffix}", "SYNC_STATE_CONTAINER": f"state-{suffix}"}
    if queue:
        values.update({"PRODUCT_SYNC_QUEUE": f"products-{suffix}", "PRODUCT_SYNC_DELAY_SECONDS": "0"})
    values.update(extra)
    if monkeypatch is not None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
    return values
