"""The error tree every caller handles: one root, subclasses only where a caller acts differently."""
from __future__ import annotations


class ImageSyncError(Exception):
    """Root of everything this package raises on purpose."""


class ConfigError(ImageSyncError):
    """A setting is missing or invalid. The message names the setting and what is expected."""


class PartnerError(ImageSyncError):
    """A partner answered with an error (or not at all).

    ``status_code`` is None when no HTTP answer arrived (connection refused, timeout).
    ``response_body`` is the partner's text, cut to a readable length; it never holds our credentials.
    """

    def __init__(self, partner: str, message: str, *, status_code: int | None = None,
                 response_body: str | None = None):
        super().__init__(f"{partner}: {message}")
        self.partner = partner
        self.message = message
        self.status_code = status_code
        self.response_body = response_body


class AuthError(PartnerError):
    """Credentials were refused: retrying with the same ones cannot help."""


class RejectedError(PartnerError):
    """The partner refused the records themselves (400/422): retrying the same records cannot help."""


class TransientError(PartnerError):
    """Outage, throttling or timeout that outlived our retries: a later run may succeed."""
