"""Contract tests of WallieClient and TraedeClient against the local sandboxes (real HTTP)."""
import time

import pytest

from devtools.azurite import free_port
from devtools.sandboxes import TraedeSandbox
from shared.config.settings import HttpSettings
from shared.errors import AuthError, RejectedError, TransientError
from shared.partners.traede import TraedeClient
from shared.partners.wallie import WallieClient
from tests.conftest import TRAEDE_CREDENTIALS, WALLIE_CREDENTIALS

FAST = HttpSettings(timeout_seconds=5, max_retries=2, backoff_seconds=0.01, max_retry_seconds=30)


def record(n, **extra):
    return {"imageId": f"00000000-0000-5000-8000-{n:012d}", "itemId": "100", "type": 0,
            "url": f"https://images.example/{n}.jpg", **extra}


def product(n, images=1):
    return {"item_number": f"P{n}", "images": [
        {"url": f"https://images.example/{n}/{i}.jpg", "sort": i + 1, "existance_key": f"k{n}-{i}"}
        for i in range(images)]}


def wallie_client(sandbox, http=FAST, **overrides):
    creds = {**WALLIE_CREDENTIALS, **overrides}
    return WallieClient(sandbox.url, creds["tenant"], creds["username"], creds["password"], http=http)


def traede_client(sandbox, http=FAST, **overrides):
    creds = {**TRAEDE_CREDENTIALS, **overrides}
    return TraedeClient(sandbox.url, creds["access_token"], creds["app_key"], http=http,
                        payload_key=overrides.get("payload_key", "products"))


# -- Wallie ---------------------------------------------------------------------------------------

def test_wallie_token_is_fetched_once_and_reused(wallie):
    client = wallie_client(wallie)
    for n in range(3):
        client.send_images([record(n)])
    assert wallie.stats["token_requests"] == 1 and len(wallie.images) == 3
    assert wallie.images[record(1)["imageId"]] == record(1)


def test_wallie_token_revoked_mid_run_is_renewed_once(wallie):
    client = wallie_client(wallie)
    client.send_images([record(1)])
    wallie.revoke_tokens()
    client.send_images([record(2)])
    assert wallie.stats["token_requests"] == 2 and len(wallie.images) == 2
    assert wallie.stats["responses"].get(401) == 1


def test_wallie_token_expiring_is_renewed_before_use(wallie):
    wallie.token_lifetime = 1.0
    client = wallie_client(wallie)
    client.send_images([record(1)])
    time.sleep(1.1)
    client.send_images([record(2)])
    assert wallie.stats["token_requests"] == 2
    assert wallie.stats["responses"].get(401, 0) == 0  # renewed early, not after a refusal


def test_wallie_wrong_credentials_raise_auth_error_without_retrying(wallie):
    client = wallie_client(wallie, password="not-the-password")
    with pytest.raises(AuthError) as exc:
        client.send_images([record(1)])
    assert "check WALLIE_TENANT, WALLIE_USERNAME and WALLIE_PASSWORD" in str(exc.value)
    assert exc.value.status_code == 401
    assert wallie.stats["token_requests"] == 1 and wallie.stats["image_requests"] == 0


def test_wallie_validation_error_is_a_rejection_with_the_partners_text(wallie):
    client = wallie_client(wallie)
    with pytest.raises(RejectedError) as exc:
        client.send_images([record(1), record(2, type=7)])
    assert exc.value.status_code == 400 and "type" in exc.value.response_body
    assert wallie.images == {}


def test_wallie_malformed_token_answer_is_a_clear_error(wallie):
    wallie.configure_faults(malformed=True)
    client = wallie_client(wallie)
    with pytest.raises(TransientError, match="not JSON"):
        client.send_images([record(1)])


# -- TRAEDE ---------------------------------------------------------------------------------------

def test_traede_sends_both_auth_headers_and_the_payload_key():
    with TraedeSandbox(**TRAEDE_CREDENTIALS, payload_key="product_images") as sandbox:
        traede_client(sandbox, payload_key="product_images").sync_products([product(1, images=2)])
        assert [i["key"] for i in sandbox.products["P1"]] == ["k1-0", "k1-1"]
        with pytest.raises(RejectedError) as exc:
            traede_client(sandbox).sync_products([product(2)])  # "products" is not what this tenant expects
        assert exc.value.status_code == 422 and "product_images" in exc.value.response_body


@pytest.mark.parametrize("wrong", ["access_token", "app_key"])
def test_traede_wrong_token_or_app_key_is_an_auth_error(traede, wrong):
    client = traede_client(traede, **{wrong: "nope"})
    with pytest.raises(AuthError) as exc:
        client.sync_products([product(1)])
    assert exc.value.status_code == 401 and traede.stats["sync_requests"] == 1


def test_traede_refuses_more_than_ten_products_before_sending(traede):
    client = traede_client(traede)
    with pytest.raises(ValueError, match="1 to 10 products"):
        client.sync_products([product(n) for n in range(11)])
    assert traede.stats["requests"] == 0
    client.sync_products([product(n) for n in range(10)])
    assert len(traede.products) == 10


def test_traede_malformed_success_is_not_taken_for_a_delivery(traede):
    traede.configure_faults(malformed=True)
    with pytest.raises(TransientError, match="not JSON"):
        traede_client(traede).sync_products([product(1)])


# -- the shared HTTP path -------------------------------------------------------------------------

def test_retries_are_exhausted_and_counted(traede):
    traede.configure_faults(outage=True)
    client = traede_client(traede, http=HttpSettings(timeout_seconds=5, max_retries=3, backoff_seconds=0.01))
    with pytest.raises(TransientError) as exc:
        client.sync_products([product(1)])
    assert exc.value.status_code == 500 and traede.stats["requests"] == 4
    assert client.stats() == {"requests": 1, "retries": 3}


def test_429_retry_after_is_honoured(traede):
    traede.configure_faults(throttle_rate=1.0, retry_after=1)
    client = traede_client(traede, http=HttpSettings(timeout_seconds=5, max_retries=1, backoff_seconds=0.01))
    started = time.monotonic()
    with pytest.raises(TransientError) as exc:
        client.sync_products([product(1)])
    assert exc.value.status_code == 429
    assert time.monotonic() - started >= 0.95  # waited what the partner asked, not our 10 ms backoff
    assert traede.stats["injected_429"] == 2


def test_retrying_is_bounded_by_total_time(traede):
    traede.configure_faults(throttle_rate=1.0, retry_after=1)
    http = HttpSettings(timeout_seconds=5, max_retries=20, backoff_seconds=0.01, max_retry_seconds=2)
    started = time.monotonic()
    with pytest.raises(TransientError):
        traede_client(traede, http=http).sync_products([product(1)])
    assert time.monotonic() - started < 4
    assert traede.stats["requests"] <= 4


def test_a_partner_slower_than_the_timeout_is_a_transient_failure(traede):
    traede.configure_faults(latency_ms=1500)
    http = HttpSettings(timeout_seconds=0.3, max_retries=1, backoff_seconds=0.01)
    started = time.monotonic()
    with pytest.raises(TransientError, match="no answer"):
        traede_client(traede, http=http).sync_products([product(1)])
    assert time.monotonic() - started < 3


def test_connection_refused_is_a_transient_failure():
    client = WallieClient(f"http://127.0.0.1:{free_port()}", "T", "u", "p",
                          http=HttpSettings(timeout_seconds=2, max_retries=2, backoff_seconds=0.01))
    with pytest.raises(TransientError, match="no answer"):
        client.send_images([record(1)])
