"""Wallie sandbox: token flow and the /Images/urls contract, over real HTTP."""

from __future__ import annotations

import time

import pytest

from devtools.sandboxes import WallieSandbox

pytestmark = pytest.mark.timeout(20)

TENANT = {"X-Tenant": "TENANT"}
CREDENTIALS = {"username": "wallie-user", "password": "wallie-pass"}


@pytest.fixture
def wallie():
    with WallieSandbox(download=False) as sandbox:
        yield sandbox


def get_token(http, wallie):
    response = http.post(f"{wallie.url}/Token", json=CREDENTIALS, headers=TENANT)
    assert response.status_code == 200, response.text
    return response.json()["accessToken"]


def post_images(http, wallie, images, token=None, **kwargs):
    headers = {**TENANT, "Authorization": f"Bearer {token or get_token(http, wallie)}"}
    return http.post(f"{wallie.url}/Images/urls", json={"images": images}, headers=headers, **kwargs)


def image(image_id="img-1", **overrides):
    record = {"imageId": image_id, "itemId": "100001", "colorId": "10", "type": 0,
              "url": f"https://img.example.com/{image_id}.jpg"}
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


# --- token


def test_token_flow_issues_bearer_token_that_authorises_images(http, wallie):
    response = http.post(f"{wallie.url}/Token", json=CREDENTIALS, headers=TENANT)
    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"accessToken", "expiresIn", "tokenType", "scope"}
    assert len(body["accessToken"]) >= 32 and body["expiresIn"] == 3600 and body["tokenType"] == "Bearer"
    assert post_images(http, wallie, [image()], token=body["accessToken"]).status_code == 200
    assert wallie.stats["token_requests"] == 1


def test_token_expires_after_its_lifetime(http):
    with WallieSandbox(token_lifetime=0.5, download=False) as wallie:
        response = http.post(f"{wallie.url}/Token", json=CREDENTIALS, headers=TENANT)
        token = response.json()["accessToken"]
        assert response.json()["expiresIn"] == 1  # an int, at least 1, even for sub-second lifetimes
        assert post_images(http, wallie, [image()], token=token).status_code == 200
        time.sleep(0.6)
        expired = post_images(http, wallie, [image()], token=token)
        assert expired.status_code == 401 and "expired" in expired.json()["message"].lower()


def test_each_token_keeps_its_own_expiry(http):
    with WallieSandbox(token_lifetime=1.0, download=False) as wallie:
        first = get_token(http, wallie)
        time.sleep(0.6)
        second = get_token(http, wallie)
        time.sleep(0.6)  # first has expired, second has ~0.4 s left
        assert post_images(http, wallie, [image()], token=first).status_code == 401
        assert post_images(http, wallie, [image()], token=second).status_code == 200


@pytest.mark.parametrize(
    "headers, body",
    [
        ({}, CREDENTIALS),
        ({"X-Tenant": "OTHER"}, CREDENTIALS),
        (TENANT, {"username": "wallie-user", "password": "wrong"}),
        (TENANT, {"username": "someone", "password": "wallie-pass"}),
        (TENANT, {"username": "wallie-user"}),
        (TENANT, ["wallie-user", "wallie-pass"]),
    ],
    ids=["no-tenant", "wrong-tenant", "wrong-password", "wrong-username", "missing-password", "not-an-object"],
)
def test_token_refused_with_401(http, wallie, headers, body):
    response = http.post(f"{wallie.url}/Token", json=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["message"]
    assert wallie.rejected[-1]["status"] == 401


def test_token_non_json_body_is_400(http, wallie):
    response = http.post(f"{wallie.url}/Token", data="username=wallie-user", headers=TENANT)
    assert response.status_code == 400


def test_revoke_tokens_forces_401(http, wallie):
    token = get_token(http, wallie)
    wallie.revoke_tokens()
    assert post_images(http, wallie, [image()], token=token).status_code == 401


# --- images: auth and content type


@pytest.mark.parametrize(
    "headers, fragment",
    [
        ({"Authorization": "Bearer {token}"}, "tenant"),
        ({**TENANT, "X-Tenant": "OTHER", "Authorization": "Bearer {token}"}, "tenant"),
        (TENANT, "missing"),
        ({**TENANT, "Authorization": "Basic {token}"}, "missing"),
        ({**TENANT, "Authorization": "Bearer not-a-token"}, "invalid"),
    ],
    ids=["no-tenant", "wrong-tenant", "no-authorization", "not-bearer", "unknown-token"],
)
def test_images_auth_failures_are_401(http, wallie, headers, fragment):
    token = get_token(http, wallie)
    headers = {k: v.format(token=token) for k, v in headers.items()}
    response = http.post(f"{wallie.url}/Images/urls", json={"images": [image()]}, headers=headers)
    assert response.status_code == 401
    assert fragment in response.json()["message"].lower()
    assert wallie.images == {}


def test_images_require_json_content_type(http, wallie):
    headers = {**TENANT, "Authorization": f"Bearer {get_token(http, wallie)}", "Content-Type": "text/plain"}
    response = http.post(f"{wallie.url}/Images/urls", data='{"images": []}', headers=headers)
    assert response.status_code == 415


# --- images: validation


@pytest.mark.parametrize(
    "records, field",
    [
        ([image(imageId=...)], "imageId"),
        ([image(imageId="")], "imageId"),
        ([image(imageId=42)], "imageId"),
        ([image(imageId="x" * 101)], "imageId"),
        ([image(itemId=...)], "itemId"),
        ([image(itemId="")], "itemId"),
        ([image(itemId=100001)], "itemId"),
        ([image(colorId="")], "colorId"),
        ([image(colorId=10)], "colorId"),
        ([image(type=6)], "type"),
        ([image(type="0")], "type"),
        ([image(type=True)], "type"),
        ([image(url=...)], "url"),
        ([image(url="/relative/path.jpg")], "url"),
        ([image(url="ftp://img.example.com/a.jpg")], "url"),
        ([image(url="https://")], "url"),
        ([image(size=100)], "size"),
        ([image("dup"), image("dup", url="https://img.example.com/other.jpg")], "imageId"),
    ],
    ids=[
        "imageId-missing", "imageId-empty", "imageId-not-string", "imageId-too-long",
        "itemId-missing", "itemId-empty", "itemId-not-string", "colorId-empty", "colorId-not-string",
        "type-unknown", "type-string", "type-bool", "url-missing", "url-relative", "url-ftp", "url-no-host",
        "unknown-field", "duplicate-imageId",
    ],
)
def test_invalid_record_is_400_and_nothing_stored(http, wallie, records, field):
    response = post_images(http, wallie, [image("good")] + records)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert any(e["field"] == field for e in errors), errors
    assert all(set(e) == {"index", "imageId", "field", "message"} for e in errors)
    assert wallie.images == {} and wallie.received == [] and wallie.stats["images_received"] == 0


@pytest.mark.parametrize(
    "body",
    [{"images": []}, {"images": "img-1"}, {}, [image()], {"images": [image()], "batch": 1}, {"images": ["img-1"]}],
    ids=["empty-list", "not-a-list", "no-images-key", "not-an-object", "unknown-top-level-key", "record-not-object"],
)
def test_malformed_body_shape_is_400(http, wallie, body):
    headers = {**TENANT, "Authorization": f"Bearer {get_token(http, wallie)}"}
    response = http.post(f"{wallie.url}/Images/urls", json=body, headers=headers)
    assert response.status_code == 400 and response.json()["errors"]


def test_non_json_images_body_is_400(http, wallie):
    headers = {**TENANT, "Authorization": f"Bearer {get_token(http, wallie)}", "Content-Type": "application/json"}
    assert http.post(f"{wallie.url}/Images/urls", data="{not json", headers=headers).status_code == 400


def test_at_most_1000_records_per_request(http, wallie):
    token = get_token(http, wallie)
    assert post_images(http, wallie, [image(f"i{n}") for n in range(1000)], token=token).status_code == 200
    response = post_images(http, wallie, [image(f"j{n}") for n in range(1001)], token=token)
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "images"
    assert len(wallie.images) == 1000


def test_every_problem_is_listed_with_its_index(http, wallie):
    response = post_images(http, wallie, [image("a", type=7), image("b"), image("c", url="nope", itemId="")])
    problems = sorted((e["index"], e["field"]) for e in response.json()["errors"])
    assert problems == [(0, "type"), (2, "itemId"), (2, "url")]


def test_rejected_id_fails_the_whole_request(http, wallie):
    wallie.faults.reject = {"bad"}
    response = post_images(http, wallie, [image("ok-1"), image("bad"), image("ok-2")])
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"index": 1, "imageId": "bad", "field": "imageId", "message": "rejected by sandbox rule"}
    ]
    assert wallie.images == {}
    assert wallie.rejected[-1]["body_sent"]["images"][1]["imageId"] == "bad"


# --- images: success


def test_success_is_empty_200_and_upserts_by_image_id(http, wallie):
    token = get_token(http, wallie)
    first = post_images(http, wallie, [image("a"), image("b", colorId=..., type=...)], token=token)
    assert first.status_code == 200 and first.content == b"" and first.headers["Content-Length"] == "0"
    post_images(http, wallie, [image("a", type=4)], token=token)
    assert wallie.images["a"]["type"] == 4
    assert wallie.images["b"] == {"imageId": "b", "itemId": "100001", "url": "https://img.example.com/b.jpg"}
    assert [len(body["images"]) for body in wallie.received] == [2, 1]
    stats = wallie.stats
    assert stats["image_requests"] == 2 and stats["images_received"] == 3 and stats["responses"][200] == 3


def test_unknown_path_is_404(http, wallie):
    response = http.post(f"{wallie.url}/Images", json={}, headers=TENANT)
    assert response.status_code == 404 and response.json()["message"]


def test_wrong_method_is_405(http, wallie):
    assert http.get(f"{wallie.url}/Images/urls", headers=TENANT).status_code == 405
