"""The error tree every caller handles: one root, subclasses only where a caller acts differently.

What a caller does next, by class: ``TransientError`` — retry later (the host retries the invocation);
``RejectedError`` — isolate the record (split the batch) and report it, never retry it; ``TooLargeError`` —
split the batch until it fits, like a rejection; ``StopPartnerError`` — send nothing more to that partner
this run (its credentials or its address are wrong), and do not ask the host to retry in vain.
"""
from __future__ import annotations


class ImageSyncError(Exception):
    """Root of everything this package raises on purpose."""


class ConfigError(ImageSyncError):
    """A setting is missing or invalid. The message names the setting and what is expected."""


class SigningError(ImageSyncError):
    """SAS URLs cannot be signed (an identity without 'Storage Blob Delegator'): nothing can be sent."""


class PartnerError(ImageSyncError):
    """A partner answered with an error (or not at all).

    ``status_code`` is None when no HTTP answer arrived (connection refused, timeout).
    ``response_body`` is the partner's text, cut to a readable length; secrets are redacted wherever it
    is shown. ``cause`` is the message without what differs from call to call (the batch's size, how many
    attempts in how many seconds, which is ``detail``): a report groups its records by the cause.
    ``unsure``: an attempt of this call was cut off or reset after the partner had the whole request, so the
    partner may still apply it, later (TRAEDE's product sets are then sent again).
    """

    def __init__(self, partner: str, message: str, *, status_code: int | None = None,
                 response_body: str | None = None, cause: str | None = None, detail: str | None = None,
                 unsure: bool = False):
        super().__init__(f"{partner}: {message}")
        self.partner = partner
        self.message = message
        self.status_code = status_code
        self.response_body = response_body
        self.cause = cause or message
        self.detail = detail
        self.unsure = unsure


class StopPartnerError(PartnerError):
    """This partner cannot be used with the current configuration: stop sending to it for this run."""


class AuthError(StopPartnerError):
    """Credentials were refused: retrying with the same ones cannot help."""


class RedirectError(StopPartnerError):
    """The partner's base URL answers with a redirect: the setting points at the wrong address."""


class RejectedError(PartnerError):
    """The partner refused the records themselves (400/422): retrying the same records cannot help."""


class TooLargeError(RejectedError):
    """413: the request body is too large; a smaller batch may pass, a single record will not."""


class TransientError(PartnerError):
    """Outage, throttling or timeout that outlived our retries: a later run may succeed."""


class StateError(ImageSyncError):
    """Our coordination state could not be read or written: the state container (``SYNC_STATE_CONTAINER``:
    pending marks, product locks, full-sync fences) or the product queue (``PRODUCT_SYNC_QUEUE``). The
    message names the setting and what to check; a later attempt may succeed. ``being_deleted``: the state
    container was deleted moments ago, and Azure lets it be created again only in a while."""

    def __init__(self, message: str, *, being_deleted: bool = False):
        super().__init__(message)
        self.being_deleted = being_deleted
