"""Properties of every SAS URL we hand out, for any blob name, TTL, skew and clock: read-only, one blob,
https when the endpoint is, starting at most `skew` in the past and ending at most `ttl` ahead.
Signed offline for hundreds of cases, then a sample downloaded from Azurite (which checks for real)."""
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config.settings import Settings
from shared.errors import ConfigError
from shared.storage.sas import SasSigner

KEY = "a2V5LWZvci1wcm9wZXJ0eS10ZXN0cw=="
# Blob names as Azure allows them: 1-1024 characters, no control characters; segments never empty
# (those are skipped by the catalog) and no trailing dot.
segment = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
                  min_size=1, max_size=40).filter(lambda s: not s.endswith("."))
blob_names = st.lists(segment, min_size=1, max_size=4).map("/".join)
clocks = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2090, 1, 1),
                      timezones=st.just(UTC))
ttls = st.floats(min_value=0.1, max_value=168).map(lambda h: timedelta(hours=h))
skews = st.floats(min_value=0, max_value=60).map(lambda m: timedelta(minutes=m))


def parse(url):
    parts = urlsplit(url)
    return parts, {k: v[0] for k, v in parse_qs(parts.query).items()}


def when(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@pytest.mark.parametrize("scheme", ["https", "http"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=blob_names, now=clocks, ttl=ttls, skew=skews)
def test_every_url_is_read_only_blob_scoped_and_bounded_in_time(scheme, name, now, ttl, skew):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(f"{scheme}://acct.blob.core.windows.net",
                                credential={"account_name": "acct", "account_key": KEY})
    url = SasSigner(service, "product-images", ttl=ttl, start_skew=skew, clock=lambda: now).url(name)
    parts, q = parse(url)
    assert parts.scheme == scheme
    assert unquote(parts.path) == f"/product-images/{name}"  # this blob, nothing else
    assert q["sp"] == "r" and q["sr"] == "b"  # read-only, blob-scoped
    assert (q.get("spr") == "https") is (scheme == "https")
    start, expiry = when(q["st"]), when(q["se"])
    assert start <= now and now - start <= skew + timedelta(seconds=1)  # whole seconds on the wire
    assert now < expiry and expiry - now <= ttl
    assert "sig" in q and not any(k in q for k in ("srt", "ss", "sdd"))  # not an account or directory SAS


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=blob_names)
def test_sample_urls_download_from_azurite_and_refuse_writes(blob_service, container, name):
    from azure.core.exceptions import HttpResponseError

    try:
        container.upload_blob(name, name.encode(), overwrite=True)
    except HttpResponseError:
        return  # a name the service itself refuses never reaches the catalog
    url = SasSigner(blob_service, container.container_name, ttl=timedelta(hours=1),
                    start_skew=timedelta(minutes=15)).url(name)
    assert requests.get(url, timeout=10).content == name.encode()
    assert requests.put(url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10).status_code == 403


@pytest.mark.parametrize("hours", ["168.5", "169", "1000"])
def test_ttl_above_168_hours_is_refused(hours):
    with pytest.raises(ConfigError, match="at most 168"):
        Settings.from_env({"IMAGES_STORAGE": "UseDevelopmentStorage=true", "SAS_TTL_HOURS": hours})


def test_ttl_of_exactly_168_hours_is_allowed():
    assert Settings.from_env({"IMAGES_STORAGE": "UseDevelopmentStorage=true", "SAS_TTL_HOURS": "168"}).sas_ttl_hours == 168
