"""TRAEDE sandbox: auth, validation and full-set replacement of /products/images/sync, over real HTTP."""

from __future__ import annotations

import pytest

from devtools.sandboxes import TraedeSandbox

pytestmark = pytest.mark.timeout(20)

AUTH = {"Authorization": "Bearer traede-token", "X-Traede-App-Key": "traede-app-key"}


@pytest.fixture
def traede():
    with TraedeSandbox(download=False) as sandbox:
        yield sandbox


def sync(http, traede, products, headers=AUTH, key="products"):
    return http.post(f"{traede.url}/products/images/sync", json={key: products}, headers=headers)


def img(name, sort=1, **extra):
    image = {"url": f"https://img.example.com/{name}.jpg?sig=secret-{name}", "sort": sort, **extra}
    return {k: v for k, v in image.items() if v is not ...}


def product(item_number="cool-product-001", images=None, **extra):
    record = {"item_number": item_number, "images": [img("a")] if images is None else images, **extra}
    return {k: v for k, v in record.items() if v is not ...}


# --- auth and shape


@pytest.mark.parametrize(
    "headers, named",
    [
        ({"X-Traede-App-Key": "traede-app-key"}, ["Authorization"]),
        ({**AUTH, "Authorization": "Bearer wrong"}, ["Authorization"]),
        ({**AUTH, "Authorization": "traede-token"}, ["Authorization"]),
        ({"Authorization": "Bearer traede-token"}, ["X-Traede-App-Key"]),
        ({**AUTH, "X-Traede-App-Key": "wrong"}, ["X-Traede-App-Key"]),
        ({}, ["Authorization", "X-Traede-App-Key"]),
    ],
    ids=["no-token", "wrong-token", "no-bearer-scheme", "no-app-key", "wrong-app-key", "neither"],
)
def test_auth_failures_are_401_naming_what_is_wrong(http, traede, headers, named):
    response = sync(http, traede, [product()], headers=headers)
    assert response.status_code == 401
    message = response.json()["message"]
    for name in ("Authorization", "X-Traede-App-Key"):
        assert (name in message) == (name in named), message
    assert traede.products == {}


def test_requires_json_content_type(http, traede):
    headers = {**AUTH, "Content-Type": "text/plain"}
    response = http.post(f"{traede.url}/products/images/sync", data='{"products": []}', headers=headers)
    assert response.status_code == 415


def test_non_json_body_is_422(http, traede):
    headers = {**AUTH, "Content-Type": "application/json"}
    assert http.post(f"{traede.url}/products/images/sync", data="{oops", headers=headers).status_code == 422


@pytest.mark.parametrize(
    "body",
    [{"product_images": [product()]}, {}, {"products": [product()], "extra": 1}, [product()]],
    ids=["other-key", "no-key", "extra-key", "not-an-object"],
)
def test_body_must_hold_exactly_the_payload_key(http, traede, body):
    response = http.post(f"{traede.url}/products/images/sync", json=body, headers=AUTH)
    assert response.status_code == 422
    assert "'products'" in response.json()["message"]


def test_payload_key_is_configurable(http):
    with TraedeSandbox(payload_key="product_images", download=False) as traede:
        assert sync(http, traede, [product()], key="product_images").status_code == 200
        response = sync(http, traede, [product()], key="products")
        assert response.status_code == 422 and "'product_images'" in response.json()["message"]


def test_at_most_10_products_per_request(http, traede):
    assert sync(http, traede, [product(f"p{n}") for n in range(10)]).status_code == 200
    response = sync(http, traede, [product(f"q{n}") for n in range(11)])
    assert response.status_code == 422
    assert response.json()["message"] == "You can only send images of 10 products at a time"
    assert response.json()["errors"]
    assert len(traede.products) == 10


@pytest.mark.parametrize("products", [[], "cool-product-001"], ids=["empty", "not-a-list"])
def test_products_must_be_a_non_empty_list(http, traede, products):
    assert sync(http, traede, products).status_code == 422


# --- validation


@pytest.mark.parametrize(
    "bad_product, path",
    [
        (product(item_number=...), "products.1.item_number"),
        (product(item_number=""), "products.1.item_number"),
        (product(item_number=1001), "products.1.item_number"),
        (product("first"), "products.1.item_number"),  # duplicate of products.0
        (product(use_sort_b2c="yes"), "products.1.use_sort_b2c"),
        (product(images=...), "products.1.images"),
        (product(images={"url": "https://img.example.com/a.jpg"}), "products.1.images"),
        (product(colour="black"), "products.1.colour"),
        ("cool-product-001", "products.1"),
        (product(images=["https://img.example.com/a.jpg"]), "products.1.images.0"),
        (product(images=[img("a", url=...)]), "products.1.images.0.url"),
        (product(images=[img("a", url="img/a.jpg")]), "products.1.images.0.url"),
        (product(images=[img("a", url="file:///tmp/a.jpg")]), "products.1.images.0.url"),
        (product(images=[img("a", sort=...)]), "products.1.images.0.sort"),
        (product(images=[img("a", sort="1")]), "products.1.images.0.sort"),
        (product(images=[img("a", sort=True)]), "products.1.images.0.sort"),
        (product(images=[img("a", sort=1.5)]), "products.1.images.0.sort"),
        (product(images=[img("a", sort_b2c="2")]), "products.1.images.0.sort_b2c"),
        (product(images=[img("a", existance_key="")]), "products.1.images.0.existance_key"),
        (product(images=[img("a", existance_key=7)]), "products.1.images.0.existance_key"),
        (product(images=[img("a", existance_key="k" * 256)]), "products.1.images.0.existance_key"),
        (product(images=[img("a", alt=5)]), "products.1.images.0.alt"),
        (product(images=[img("a", filename=["a.jpg"])]), "products.1.images.0.filename"),
        (product(images=[img("a", attach_to_variants_matching_attribute_code=["Color", "100"])]),
         "products.1.images.0.attach_to_variants_matching_attribute_code"),
        (product(images=[img("a", attach_to_variants_matching_attribute_code={"Color": 100})]),
         "products.1.images.0.attach_to_variants_matching_attribute_code"),
        (product(images=[img("a", skip_if_no_variant_matches_attribute_code="false")]),
         "products.1.images.0.skip_if_no_variant_matches_attribute_code"),
        (product(images=[img("a", skip_if_no_variant_matches_attribute_code=True)]),
         "products.1.images.0.skip_if_no_variant_matches_attribute_code"),
        (product(images=[img("a", position=1)]), "products.1.images.0.position"),
        (product(images=[img("a", sort=1), img("a", sort=2)]), "products.1.images.1.url"),
        (product(images=[img("a", existance_key="k"), img("b", existance_key="k")]),
         "products.1.images.1.existance_key"),
    ],
    ids=[
        "item_number-missing", "item_number-empty", "item_number-not-string", "item_number-duplicate",
        "use_sort_b2c-not-bool", "images-missing", "images-not-list", "product-unknown-field", "product-not-object",
        "image-not-object", "url-missing", "url-relative", "url-file", "sort-missing", "sort-string", "sort-bool",
        "sort-float", "sort_b2c-string", "existance_key-empty", "existance_key-not-string", "existance_key-too-long",
        "alt-not-string", "filename-not-string", "attach-not-object", "attach-non-string-value",
        "skip-not-bool", "skip-without-variant", "image-unknown-field", "duplicate-url-key", "duplicate-existance-key",
    ],
)
def test_invalid_data_is_422_and_nothing_applied(http, traede, bad_product, path):
    response = sync(http, traede, [product("first"), bad_product])
    assert response.status_code == 422
    body = response.json()
    assert body["message"] == "The given data was invalid."
    assert path in [error["path"] for error in body["errors"]], body["errors"]
    assert all(set(error) == {"path", "item_number", "message"} for error in body["errors"])
    assert traede.products == {} and traede.received == []
    assert traede.rejected[-1]["status"] == 422


def test_full_featured_image_from_the_documented_example_is_accepted(http, traede):
    image = img("black-01", sort=1, sort_b2c=None, existance_key="black-01@v1", alt="A black t-shirt front",
                filename="black-01.jpg", attach_to_variants_matching_attribute_code={"Color": "100"},
                skip_if_no_variant_matches_attribute_code=True)
    response = sync(http, traede, [product(images=[image], use_sort_b2c=False)])
    assert response.status_code == 200 and response.json() == {"status": "ok", "products": 1}
    assert traede.products["cool-product-001"] == [{**image, "key": "black-01@v1"}]


def test_error_names_the_item_number(http, traede):
    errors = sync(http, traede, [product("p-7", images=[img("a", sort="x")])]).json()["errors"]
    assert errors == [{"path": "products.0.images.0.sort", "item_number": "p-7", "message": "Must be an integer"}]


def test_rejected_item_number_fails_the_whole_request(http, traede):
    traede.faults.reject = {"p-bad"}
    response = sync(http, traede, [product("p-ok"), product("p-bad")])
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"path": "products.1.item_number", "item_number": "p-bad", "message": "rejected by sandbox rule"}
    ]
    assert traede.products == {}


# --- full-set replacement


def test_full_set_replacement_counts_new_kept_and_deleted(http, traede):
    assert sync(http, traede, [product(images=[img("a", 1), img("b", 2), img("c", 3)])]).status_code == 200
    stats = traede.stats
    assert (stats["images_new"], stats["images_kept"], stats["images_deleted"]) == (3, 0, 0)

    response = sync(http, traede, [product(images=[img("b", 1, alt="now first"), img("d", 2)])])
    assert response.status_code == 200
    stats = traede.stats
    assert (stats["images_new"], stats["images_kept"], stats["images_deleted"]) == (4, 1, 2)
    images = traede.products["cool-product-001"]
    assert [(i["key"], i["sort"], i.get("alt")) for i in images] == [
        (img("b")["url"], 1, "now first"),
        (img("d")["url"], 2, None),
    ]


def test_existance_key_identifies_images_across_changing_urls(http, traede):
    sync(http, traede, [product(images=[img("a", existance_key="a@v1")])])
    sync(http, traede, [product(images=[{"url": "https://other.example.com/new-sas.jpg", "sort": 1,
                                        "existance_key": "a@v1"}])])
    stats = traede.stats
    assert (stats["images_new"], stats["images_kept"], stats["images_deleted"]) == (1, 1, 0)
    assert traede.products["cool-product-001"][0]["url"] == "https://other.example.com/new-sas.jpg"


def test_empty_images_list_deletes_all_images_of_that_product_only(http, traede):
    sync(http, traede, [product("p1", images=[img("a"), img("b", 2)]), product("p2", images=[img("c")])])
    assert sync(http, traede, [product("p1", images=[])]).status_code == 200
    assert traede.products == {"p1": [], "p2": [{**img("c"), "key": img("c")["url"]}]}
    assert traede.stats["images_deleted"] == 2


def test_products_received_and_received_bodies(http, traede):
    first = {"products": [product("p1"), product("p2")]}
    http.post(f"{traede.url}/products/images/sync", json=first, headers=AUTH)
    assert traede.received == [first]
    assert traede.stats["products_received"] == 2 and traede.stats["sync_requests"] == 1


def test_unknown_path_and_wrong_method(http, traede):
    assert http.post(f"{traede.url}/products/sync", json={}, headers=AUTH).status_code == 404
    assert http.get(f"{traede.url}/products/images/sync", headers=AUTH).status_code == 405
