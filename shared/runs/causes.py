"""The causes a reader of a kept run acts on: the words the engine gives a product it did not send, so that a
resubmit (``app.resubmit``) can tell a product that was never listed to the end (it goes to both partners again,
listed afresh) and one the run found without any image (its set is never sent empty by a resubmit: a typo'd
``--item`` is not a deleted product) from any other problem.
"""
from __future__ import annotations

# The run was stopped, or its listing broke off, before the product was complete: what it holds was never known.
STOPPED_LISTING = "not sent: the run was stopped before the product's listing was complete"
BROKEN_LISTING = "not sent: the listing did not complete, and a partial set would delete images at TRAEDE"
UNSIGNED = "not sent: its images' URLs could not be signed"
BROKE_OFF = "not sent: the run broke off before the product's listing was complete"  # not a storage error
UNREACHED = "not sent: the run was stopped before it reached the product"
UNLISTED = (STOPPED_LISTING, BROKEN_LISTING, UNSIGNED, BROKE_OFF, UNREACHED)

# An asked-for product (``sync --item``) whose folder held no image.
NO_IMAGE = ("not sent: the product has no image in the container (a typo?); sending it would delete all its images "
            "at TRAEDE: pass --allow-empty to do that on purpose")


def empty_set_note(item: str) -> str:
    """Said of each product whose set goes to TRAEDE empty, as it goes."""
    return f"product {item!r} has no image in the container now: its set goes to TRAEDE empty, which deletes all " \
           "its images there"
