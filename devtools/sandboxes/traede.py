"""TRAEDE sandbox: `POST /products/images/sync` with full-set replacement per product.

The full-set rule is the dangerous part of this API (an image left out is deleted), so the sandbox keeps
each product's image set and counts new, kept and deleted keys: tests can prove a sync deletes nothing
by accident and re-downloads nothing that did not change.
"""

from __future__ import annotations

import time
from typing import Any

from .base import Reply, Request, Route, Sandbox, is_http_url, is_int, is_nonempty_str, json_reply

PRODUCT_FIELDS = ("item_number", "use_sort_b2c", "images")
IMAGE_FIELDS = (
    "url",
    "sort",
    "sort_b2c",
    "existance_key",
    "alt",
    "filename",
    "attach_to_variants_matching_attribute_code",
    "skip_if_no_variant_matches_attribute_code",
)
MAX_PRODUCTS = 10
MAX_EXISTANCE_KEY = 255
INVALID = "The given data was invalid."


class TraedeSandbox(Sandbox):
    """TRAEDE's image sync endpoint; `.products` is item_number -> the images it has now (each with "key")."""

    name = "traede"
    counters = ("sync_requests", "products_received", "images_new", "images_kept", "images_deleted",
                "images_not_created")

    def __init__(
        self,
        access_token: str = "traede-token",
        app_key: str = "traede-app-key",
        payload_key: str = "products",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        download: bool = True,
    ) -> None:
        self.access_token = access_token
        self.app_key = app_key
        self.payload_key = payload_key
        # item_number -> attribute -> the codes its variants have (e.g. {"Color": {"100"}}); a product not
        # here has every variant an image names. Read by skip_if_no_variant_matches_attribute_code.
        self.variants: dict[str, dict[str, set[str]]] = {}
        super().__init__(host=host, port=port, download=download)

    def routes(self) -> dict[str, Route]:
        return {"/products/images/sync": Route(self._post_sync, "sync_requests")}

    # --- inspection

    @property
    def products(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {item: [dict(image) for image in images] for item, images in self._products.items()}

    @property
    def downloaded(self) -> dict[str, dict[str, dict[str, Any]]]:
        """item_number -> key -> {"url", "sha256", "size"} of the download made when the key was new."""
        with self._lock:
            return {item: {k: dict(v) for k, v in keys.items()} for item, keys in self._downloaded.items()}

    @property
    def history(self) -> list[dict[str, Any]]:
        """Every product set in the order TRAEDE applied it: {"seq", "item_number", "keys", "at"}.

        ``keys`` are the image keys of the set (existance_key, else URL) and ``at`` is time.time() when it
        was applied; tests read the order to prove a product's set never goes backwards.
        """
        with self._lock:
            return [dict(entry, keys=list(entry["keys"])) for entry in self._history]

    def _clear_state(self) -> None:
        self._products: dict[str, list[dict[str, Any]]] = {}
        self._downloaded: dict[str, dict[str, dict[str, Any]]] = {}
        self._history: list[dict[str, Any]] = []

    def _partner_state(self) -> dict[str, Any]:
        return {"products": self._products, "downloaded": self._downloaded, "history": self._history}

    # --- endpoint

    def _post_sync(self, request: Request) -> Reply:
        wrong = []
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.access_token:
            wrong.append("Authorization bearer token")
        if request.header("X-Traede-App-Key") != self.app_key:
            wrong.append("X-Traede-App-Key header")
        if wrong:
            return self._refuse(request, 401, {"message": f"Unauthenticated: missing or wrong {' and '.join(wrong)}"})
        if not request.is_json:
            return self._refuse(request, 415, {"message": "Content-Type must be application/json"})
        try:
            body = request.json()
        except ValueError:
            return self._invalid(request, INVALID, [_error("", None, "Request body is not valid JSON")])

        key = self.payload_key
        if not isinstance(body, dict) or list(body) != [key]:
            message = f"The body must be a JSON object with exactly one key {key!r} holding the products"
            return self._invalid(request, message, [_error(key, None, message)])
        products = body[key]
        if not isinstance(products, list) or not products:
            return self._invalid(request, INVALID, [_error(key, None, "Required: a list of 1 to 10 products")])
        if len(products) > MAX_PRODUCTS:
            message = f"You can only send images of {MAX_PRODUCTS} products at a time"
            return self._invalid(request, message, [_error(key, None, f"{message} (got {len(products)})")])
        errors = self._validate(products)
        if errors:
            return self._invalid(request, INVALID, errors)

        to_download = self._apply(body, products)
        for item_number, image_key, url in to_download:
            result = self._fetch(url, item_number=item_number, key=image_key)
            if result is not None:
                with self._lock:
                    if any(image["key"] == image_key for image in self._products.get(item_number, [])):
                        self._downloaded.setdefault(item_number, {})[image_key] = result
        return json_reply(200, {"status": "ok", "products": len(products)})

    def _invalid(self, request: Request, message: str, errors: list[dict[str, Any]]) -> Reply:
        return self._refuse(request, 422, {"message": message, "errors": errors})

    def _apply(self, body: dict[str, Any], products: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        """Replace each product's image set; returns the (item_number, key, url) of new keys to download."""
        to_download = []
        with self._lock:
            self._received.append(body)
            self._stats["products_received"] += len(products)
            for product in products:
                item_number = product["item_number"]
                before = {image["key"] for image in self._products.get(item_number, [])}
                after = [dict(image, key=_image_key(image)) for image in product["images"]
                         if self._creates(item_number, image, before)]
                for image in after:
                    if image["key"] in before:
                        self._stats["images_kept"] += 1
                    else:
                        self._stats["images_new"] += 1
                        if self.download:
                            to_download.append((item_number, image["key"], image["url"]))
                gone = before - {image["key"] for image in after}
                self._stats["images_deleted"] += len(gone)
                downloads = self._downloaded.get(item_number, {})
                for image_key in gone:
                    downloads.pop(image_key, None)
                self._products[item_number] = after
                self._history.append({"seq": len(self._history) + 1, "item_number": item_number,
                                      "keys": [image["key"] for image in after], "at": time.time()})
        return to_download

    def _creates(self, item_number: str, image: dict[str, Any], before: set[str]) -> bool:
        """skip_if_no_variant_matches_attribute_code: a NEW image whose attribute codes match none of the
        product's variants is not created (existing images are kept, as TRAEDE documents)."""
        if not image.get("skip_if_no_variant_matches_attribute_code") or _image_key(image) in before:
            return True
        known = self.variants.get(item_number)
        attach = image.get("attach_to_variants_matching_attribute_code") or {}
        if known is None or any(code in known.get(attr, set()) for attr, code in attach.items()):
            return True
        self._stats["images_not_created"] += 1
        return False

    # --- contract

    def _validate(self, products: list[Any]) -> list[dict[str, Any]]:
        """Every problem in the request; like Laravel's validator, all of them are listed at once."""
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for index, product in enumerate(products):
            errors.extend(self._product_errors(f"{self.payload_key}.{index}", product, seen))
        return errors

    def _product_errors(self, path: str, product: Any, seen: set[str]) -> list[dict[str, Any]]:
        if not isinstance(product, dict):
            return [_error(path, None, "Product must be a JSON object")]
        item_number = product.get("item_number")
        reported = item_number if isinstance(item_number, str) else None
        errors = []

        def problem(field: str, message: str) -> None:
            errors.append(_error(f"{path}.{field}", reported, message))

        for name in product:
            if name not in PRODUCT_FIELDS:
                problem(name, "Unknown field")
        if "item_number" not in product:
            problem("item_number", "Required")
        elif not is_nonempty_str(item_number):
            problem("item_number", "Must be a non-empty string")
        elif item_number in seen:
            problem("item_number", "Duplicate item_number in this request")
        elif item_number in self.faults.reject:
            problem("item_number", "rejected by sandbox rule")
        if isinstance(item_number, str):
            seen.add(item_number)
        if "use_sort_b2c" in product and not isinstance(product["use_sort_b2c"], bool):
            problem("use_sort_b2c", "Must be a boolean")
        images = product.get("images")
        if not isinstance(images, list):
            problem("images", "Required: a list of images (an empty list deletes all images)")
            return errors
        keys: set[str] = set()
        for index, image in enumerate(images):
            errors.extend(_image_errors(f"{path}.images.{index}", reported, image, keys))
        return errors


def _image_errors(path: str, item_number: str | None, image: Any, keys: set[str]) -> list[dict[str, Any]]:
    if not isinstance(image, dict):
        return [_error(path, item_number, "Image must be a JSON object")]
    errors = []

    def problem(field: str, message: str) -> None:
        errors.append(_error(f"{path}.{field}", item_number, message))

    for name in image:
        if name not in IMAGE_FIELDS:
            problem(name, "Unknown field")
    if "url" not in image:
        problem("url", "Required")
    elif not is_http_url(image["url"]):
        problem("url", "Must be an absolute http(s) URL")
    if "sort" not in image:
        problem("sort", "Required")
    elif not is_int(image["sort"]):
        problem("sort", "Must be an integer")
    if "sort_b2c" in image and image["sort_b2c"] is not None and not is_int(image["sort_b2c"]):
        problem("sort_b2c", "Must be an integer or null")
    key_ok = True
    if "existance_key" in image:
        existance_key = image["existance_key"]
        if not is_nonempty_str(existance_key):
            problem("existance_key", "Must be a non-empty string when present")
            key_ok = False
        elif len(existance_key) > MAX_EXISTANCE_KEY:
            problem("existance_key", f"At most {MAX_EXISTANCE_KEY} characters")
            key_ok = False
    for name in ("alt", "filename"):
        if name in image and image[name] is not None and not isinstance(image[name], str):
            problem(name, "Must be a string or null")
    attach = image.get("attach_to_variants_matching_attribute_code")
    if "attach_to_variants_matching_attribute_code" in image and not (
        isinstance(attach, dict) and all(isinstance(v, str) for v in attach.values())
    ):
        problem("attach_to_variants_matching_attribute_code", 'Must be an object of strings, e.g. {"Color": "100"}')
    if "skip_if_no_variant_matches_attribute_code" in image:
        if not isinstance(image["skip_if_no_variant_matches_attribute_code"], bool):
            problem("skip_if_no_variant_matches_attribute_code", "Must be a boolean")
        elif "attach_to_variants_matching_attribute_code" not in image:
            # Stricter than the docs say: the flag means nothing without a variant to match, and sending it
            # alone would hide a client that lost the variant attribute.
            problem("skip_if_no_variant_matches_attribute_code",
                    "Only meaningful with attach_to_variants_matching_attribute_code")
    if key_ok and ("existance_key" in image or isinstance(image.get("url"), str)):
        image_key = _image_key(image)
        if image_key in keys:
            field = "existance_key" if "existance_key" in image else "url"
            problem(field, f"Duplicate image key {image_key!r} in this product")
        keys.add(image_key)
    return errors


def _image_key(image: dict[str, Any]) -> str:
    """TRAEDE identifies an image by its existance_key when given, else by its URL."""
    return image.get("existance_key") or image["url"]


def _error(path: str, item_number: str | None, message: str) -> dict[str, Any]:
    return {"path": path, "item_number": item_number, "message": message}
