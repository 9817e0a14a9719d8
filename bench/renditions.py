"""Renditions per second and peak RSS: ``python -m bench --renditions 12 --renditions-only``.

Seeds N 20-megapixel TIFFs (5472 x 3648, RGB, uncompressed: 60 MB each, what a camera's print master
exported from a raw editor looks like) into a throwaway Azurite, then ``--repeat`` times, in a fresh process
(``bench.child --renditions``), runs the web stage over the container as a full sync does for images it has
no verdict on: each one looked at with ranged reads, downloaded to a temporary file, decoded, converted to
an sRGB JPEG of at most ``RENDITION_MAX_SIDE`` px, written to the renditions container, its verdict kept in
its tag. Nothing is sent to a partner. Between runs the verdicts and renditions are removed, so each run
converts every image again.
"""
from __future__ import annotations

import argparse
import io
import time

from bench.figures import summarize

SIZE = (5472, 3648)  # 20 MP, a 3:2 camera sensor
RENDITION_KEYS = ("wall_s", "renditions_per_s", "peak_rss_mb", "cpu_s")


def tiff_20mp(seed: int, compression: str = "raw") -> bytes:
    """A 20 MP RGB TIFF with detail in every channel (noise over gradients: it does not compress away)."""
    from PIL import Image

    width, height = SIZE
    gradient = Image.linear_gradient("L").resize(SIZE)
    noise = Image.effect_noise(SIZE, 40 + seed % 7)
    channels = (Image.blend(gradient, noise, 0.5), noise,
                Image.blend(gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise, 0.3))
    image = Image.merge("RGB", channels)
    out = io.BytesIO()
    image.save(out, "TIFF", compression=None if compression == "raw" else compression)
    return out.getvalue()


def run_renditions(args: argparse.Namespace, log) -> dict:  # type: ignore[no-untyped-def]
    from azure.storage.blob import BlobServiceClient, ContentSettings

    from bench.__main__ import run_child
    from devtools.azurite import Azurite

    count = args.renditions
    container_name, renditions_name = "bench-renditions", "bench-renditions-out"
    with Azurite(extra_args=("--loose",)) as azurite:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.create_container(container_name)
        started = time.monotonic()
        size = 0
        for n in range(count):
            data = tiff_20mp(n)
            size = len(data)
            container.upload_blob(f"{500000 + n}/BLK/master-{n}.tif", data,
                                  content_settings=ContentSettings(content_type="image/tiff"), max_concurrency=2)
        log(f"renditions: {count} TIFFs of {SIZE[0]}x{SIZE[1]} ({size / 2**20:.0f} MB each) seeded in "
            f"{time.monotonic() - started:.0f}s")
        env = {"IMAGES_STORAGE": azurite.connection_string, "IMAGES_CONTAINER": container_name,
               "RENDITIONS_CONTAINER": renditions_name, "WEB_IMAGES": "convert",
               "RENDITION_BUDGET_IMAGES": str(count), "RENDITION_BUDGET_MEGABYTES": "1000000",
               "RENDITION_BUDGET_SECONDS": "3600", "RUN_HISTORY_CONTAINER": ""}
        runs = []
        for n in range(1, args.repeat + 1):
            for blob in container.list_blobs():  # no verdicts, no renditions: every image is converted again
                container.get_blob_client(blob.name).set_blob_tags({})
            renditions = service.get_container_client(renditions_name)
            if renditions.exists():
                for blob in renditions.list_blobs():
                    renditions.delete_blob(blob.name)
            log(f"renditions run {n}/{args.repeat} (fresh process)...")
            out = run_child(env, ["--renditions"])
            if out["converted"] != count:
                raise RuntimeError(f"not every image was converted: {out}")
            runs.append(out)
            log(f"renditions run {n}/{args.repeat}: {out['renditions_per_s']:.2f}/s, peak RSS "
                f"{out['peak_rss_mb']:.0f} MB")
        rendition_bytes = sum(b.size for b in service.get_container_client(renditions_name).list_blobs())
        service.close()
    medians, spread = summarize(runs, RENDITION_KEYS)
    return {"images": count, "pixels": f"{SIZE[0]}x{SIZE[1]}", "tiff_mb": round(size / 2**20, 1),
            "rendition_kb": round(rendition_bytes / count / 1024, 1), "repeat": args.repeat,
            "storage_requests": runs[-1]["storage_requests"], **medians, "spread": spread, "runs": runs}
