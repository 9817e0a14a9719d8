"""What the images container holds: which blobs are product images, and what each one is.

Owns the layout (``layout``: IMAGE_PATH_PATTERN), the listing's wire protocol and prefetch (``listing``), what
one blob is (``describe`` -> ``records``: an ``ImageRecord`` or a ``SkippedBlob`` with its reason), the catalog
a run walks (``container``) and each partner's codes for a product and a colour (``partner_codes``).

May import: the ground floor (``domain``, ``errors``, ``redact``). Nothing else of ours.
"""
