"""Sample product images for the local demo: a few products, colours and kinds, plus the junk real
containers collect (a text file, macOS and Windows leftovers, an empty upload)."""
from __future__ import annotations

from .images import jpeg, png

SAMPLE_IMAGES = {
    # item 100001: a T-shirt in black (100) and white (900), as in TRAEDE's worked example
    "100001/100/front.jpg": (jpeg, (20, 20, 20)),
    "100001/100/back.jpg": (jpeg, (40, 40, 40)),
    "100001/900/front.jpg": (jpeg, (240, 240, 240)),
    "100001/900/lifestyle model.jpg": (jpeg, (200, 180, 160)),
    # item 100002: one colour, a zoom detail and packaging shot
    "100002/10/front.png": (png, (200, 30, 30)),
    "100002/10/zoom detail.png": (png, (180, 20, 20)),
    "100002/10/packaging.png": (png, (90, 90, 90)),
    # item 100003: no colour folder; a name with characters that need URL escaping
    "100003/Front #1 (ünïcode).jpg": (jpeg, (30, 120, 30)),
    "100003/side+view 50%.jpg": (jpeg, (30, 150, 30)),
}
JUNK = {
    "100001/notes.txt": b"photographer's notes, not an image",
    "100001/.DS_Store": b"\x00\x00\x00\x01Bud1",
    "100002/10/Thumbs.db": b"\xd0\xcf\x11\xe0",
    "100003/empty.jpg": b"",
    "stray-upload.jpg": None,  # at the top level: does not fit the layout
}


def seed(container, *, overwrite: bool = True) -> dict[str, bytes]:
    """Upload the samples and junk; returns the bytes of every real sample image by blob name."""
    uploaded = {}
    for name, (make, rgb) in SAMPLE_IMAGES.items():
        data = make(rgb=rgb, note=name)
        container.upload_blob(name, data, overwrite=overwrite)
        uploaded[name] = data
    for name, data in JUNK.items():
        container.upload_blob(name, data if data is not None else jpeg(note=name), overwrite=overwrite)
    return uploaded
