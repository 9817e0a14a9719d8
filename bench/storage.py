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
SEED_VERSION = "1"
# A few bytes are enough: the sandboxes run with downloads off, and the catalog only needs size > 0.
JPEG_BYTES = b"\xff\xd8\xff\xe0bench\xff\xd9"


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
                    "Content-MD5": md5})
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
