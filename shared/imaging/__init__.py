"""Web-ready images: what an image's bytes really are (``probe``, from ranged reads: ``ranges``), a web
rendition of one that is not web-ready (``render``), and the stage every run passes its images through
(``stage``: verdicts kept in blob index tags, renditions in RENDITIONS_CONTAINER, within a per-run budget).

The only floor that imports Pillow. Decoding is bounded: one image decoded at a time per process, at most
``render.MAX_DECODE_PIXELS`` pixels (JPEGs decoded at a reduced scale first).

May import: ``catalog``, ``config``, ``storage``, ``runs`` and the ground floor.
"""
