"""SAS URLs against Azurite, which checks signatures, permissions and expiry for real."""
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devtools.images import jpeg
from shared.storage.sas import SasSigner

ODD_NAMES = [
    "100/10/front view.jpg", "100/10/ünïcødé-前面.jpg", "100/10/a#b.jpg", "100/10/50%.jpg",
    "100/10/a+b.jpg", "100/10/what?.jpg", "100/10/this&that.jpg", "100/10/semi;colon=eq.jpg",
    "100/10/%20literal.jpg", "100/10/tilde~quote'.jpg",
]


def signer(service, container, *, ttl=timedelta(hours=48), skew=timedelta(minutes=15), clock=None):
    kw = {"clock": clock} if clock else {}
    return SasSigner(service, container.container_name, ttl=ttl, start_skew=skew, **kw)


@pytest.mark.parametrize("name", ODD_NAMES)
def test_url_downloads_the_exact_bytes_for_odd_names(blob_service, container, name):
    data = jpeg(note=name)
    container.upload_blob(name, data)
    response = requests.get(signer(blob_service, container).url(name), timeout=10)
    assert response.status_code == 200, response.text
    assert response.content == data


def test_url_is_read_only_blob_scoped_and_time_limited(blob_service, container):
    fixed = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    url = signer(blob_service, container, ttl=timedelta(hours=6), skew=timedelta(minutes=15),
                 clock=lambda: fixed).url("1/front.jpg")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q["sp"] == "r" and q["sr"] == "b"
    assert q["st"] == "2030-01-01T11:45:00Z" and q["se"] == "2030-01-01T18:00:00Z"
    assert "spr" not in q or q["spr"] != "https"  # Azurite here is plain http: https-only would be unusable


def test_https_endpoint_pins_the_protocol():
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient("https://acct.blob.core.windows.net",
                                credential={"account_name": "acct", "account_key": "a2V5"})
    url = SasSigner(service, "product-images", ttl=timedelta(hours=1), start_skew=timedelta(0)).url("1/a.jpg")
    assert url.startswith("https://acct.blob.core.windows.net/product-images/1/a.jpg?")
    assert parse_qs(urlsplit(url).query)["spr"] == ["https"]


def test_tampered_signature_is_refused(blob_service, container):
    container.upload_blob("1/front.jpg", jpeg())
    url = signer(blob_service, container).url("1/front.jpg")
    head, sig = url.split("&sig=")
    tampered = f"{head}&sig={'B' if sig[0] == 'A' else 'A'}{sig[1:]}"
    assert tampered != url
    assert requests.get(tampered, timeout=10).status_code == 403


def test_url_for_one_blob_does_not_open_another(blob_service, container):
    container.upload_blob("1/front.jpg", jpeg())
    container.upload_blob("1/back.jpg", jpeg(note="b"))
    url = signer(blob_service, container).url("1/front.jpg")
    assert requests.get(url.replace("1/front.jpg", "1/back.jpg"), timeout=10).status_code == 403


def test_expired_url_is_refused(blob_service, container):
    container.upload_blob("1/front.jpg", jpeg())
    long_ago = datetime.now(UTC) - timedelta(days=3)
    url = signer(blob_service, container, ttl=timedelta(hours=1), clock=lambda: long_ago).url("1/front.jpg")
    assert requests.get(url, timeout=10).status_code == 403


def test_writing_or_deleting_with_the_url_is_refused(blob_service, container):
    data = jpeg()
    container.upload_blob("1/front.jpg", data)
    url = signer(blob_service, container).url("1/front.jpg")
    put = requests.put(url, data=b"evil", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10)
    assert put.status_code == 403
    assert requests.delete(url, timeout=10).status_code == 403
    assert container.download_blob("1/front.jpg").readall() == data


@pytest.mark.parametrize("ttl", [timedelta(hours=169), timedelta(0), timedelta(hours=-1)])
def test_signer_refuses_a_lifetime_outside_0_to_7_days(blob_service, container, ttl):
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="7 days"):
        signer(blob_service, container, ttl=ttl)
