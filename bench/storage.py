"""Azurite that keeps its data between benchmark runs, and the synthetic catalog seeded into it.

Seeding 100k blobs costs minutes, so the catalog lives in an Azurite with disk persistence under
``bench/.cache/`` and is reused when a container with the same shape is already complete (a marker in
the container's metadata is written only after the last upload).
"""
from __future__ import annotations

import base64
import hashlib
import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from devtools.azurite import ACCOUNT, ACCOUNT_KEY

COLOURS = ("BLK", "WHT")
KINDS = ("front", "back", "detail", "zoom", "lifestyle", "packaging")
SEED_VERSION = "2"
# A real (tiny) JPEG: the web stage reads what images really are. The sandboxes run with downloads off.
JPEG_BYTES = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f141d1a"
    "1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080001000101011100ffc4001f"
    "0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504040000017d0102"
    "0300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738"
    "393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798999aa2"
    "a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8"
    "f9faffda0008010100003f00fbd3ffd9")


def verdict_tag() -> str:
    """The ``x-ms-tags`` header that gives every seeded image the verdict the web stage would write: the
    catalog is seeded as a night after the first would leave it (WEB_IMAGES on, every verdict kept)."""
    from urllib.parse import quote

    from shared.catalog.web import TAG, Verdict

    md5 = hashlib.md5(JPEG_BYTES).hexdigest()
    return f"{quote(TAG)}={quote(Verdict(f'md5:{md5}', 'JPEG', 1, 1, 'L').encode())}"


def catalog_names(images: int, products: int):
    """(item, blob name) for N images spread evenly over P products, two colours each, in listing order."""
    per, extra = divmod(images, products)
    for p in range(products):
        item = f"{100000 + p}"
        for k in range(per + (1 if p < extra else 0)):
            yield item, f"{item}/{COLOURS[k % 2]}/{KINDS[(k // 2) % len(KINDS)]}-{k}.jpg"


def container_name(images: int, products: int) -> str:
    return f"bench-{images}-{products}"


def ensure_catalog(service, images: int, products: int, *, workers: int = 16,
                   log=print) -> tuple[str, bool, float]:
    """Create (or reuse) the synthetic catalog; returns (container, reused, seconds)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    name = container_name(images, products)
    marker = f"images={images};products={products};v={SEED_VERSION}"
    container = service.get_container_client(name)
    try:
        container.create_container()
    except ResourceExistsError:
        if container.get_container_properties().metadata.get("seeded") == marker:
            return name, True, 0.0
    started = time.monotonic()
    sas = generate_container_sas(ACCOUNT, name, account_key=ACCOUNT_KEY,
                                 permission=ContainerSasPermissions(write=True, create=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=6))
    url = urlsplit(container.url)
    names = [n for _, n in catalog_names(images, products)]
    local = threading.local()
    md5 = base64.b64encode(hashlib.md5(JPEG_BYTES).digest()).decode()
    tags = verdict_tag()
    done = [0]
    lock = threading.Lock()

    def put(blob: str) -> None:
        # Raw keep-alive PUTs with a container SAS: the SDK pipeline costs more CPU than Azurite itself.
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        path = f"{url.path}/{quote(blob, safe='/~')}?{sas}"
        for attempt in range(5):
            try:
                conn.request("PUT", path, body=JPEG_BYTES, headers={
                    "x-ms-blob-type": "BlockBlob", "x-ms-version": "2021-08-06", "Content-Type": "image/jpeg",
                    "Content-MD5": md5, "x-ms-tags": tags})
                response = conn.getresponse()
                response.read()
                if response.status == 201:
                    break
                raise OSError(f"PUT {blob}: HTTP {response.status}")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
                if attempt == 4:
                    raise
        with lock:
            done[0] += 1
            if done[0] % 20000 == 0:
                log(f"  seeded {done[0]}/{len(names)} blobs ({time.monotonic() - started:.0f}s)")

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(put, names, chunksize=256):
            pass
    container.set_container_metadata({"seeded": marker})
    return name, False, time.monotonic() - started
