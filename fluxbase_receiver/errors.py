"""Typed errors: one root, :class:`FluxbaseError`, with a branch per part of the package.

:class:`WebhookError` is a receiver's refusal, :class:`SenderError` the sender's errors and
``FluxbaseAPIError`` (in :mod:`fluxbase_receiver.client`) the management client's.
"""

from __future__ import annotations


class FluxbaseError(Exception):
    """Root of every error this package raises on purpose.

    ``code`` is a stable machine-readable string. ``str(error)`` is safe to show or log:
    it never holds a secret or an expected signature.
    """

    code: str = "fluxbase_error"


class WebhookError(FluxbaseError):
    """Base class of every refusal of a receiver. ``str(error)`` is safe to show to the sender."""

    code = "webhook_error"
    status: int = 400


class MethodNotAllowed(WebhookError):
    """The request was not a POST."""

    code = "method_not_allowed"
    status = 405


class PayloadTooLarge(WebhookError):
    """The body is larger than ``max_body_bytes``."""

    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(WebhookError):
    """A ``Content-Type`` was given and it is not JSON."""

    code = "unsupported_media_type"
    status = 415


class SignatureError(WebhookError):
    """The request is not proven to come from the holder of the secret."""

    code = "invalid_signature"
    status = 401


class MissingSignature(SignatureError):
    """No signature header was sent."""

    code = "missing_signature"


class MalformedSignature(SignatureError):
    """The signature header cannot be read (no ``t``, no ``v1``, bad syntax)."""

    code = "malformed_signature"


class TimestampOutsideTolerance(SignatureError):
    """The signed timestamp is too old or too far in the future (replay protection)."""

    code = "timestamp_outside_tolerance"


class InvalidSignature(SignatureError):
    """No signature in the header matches the body under any configured secret."""

    code = "invalid_signature"


class InvalidPayload(WebhookError):
    """The body is not JSON, or not a valid Fluxbase event."""

    code = "invalid_payload"
    status = 400


class EventInProgress(WebhookError):
    """The same event is being handled right now; the sender should retry later."""

    code = "event_in_progress"
    status = 409


class HandlerError(WebhookError):
    """One or more handlers raised. ``exceptions`` holds every failure, in handler order."""

    code = "handler_failed"
    status = 500

    def __init__(self, message: str, exceptions: tuple[BaseException, ...]) -> None:
        super().__init__(message)
        self.exceptions = exceptions


class SenderError(FluxbaseError):
    """Base class of the sender's errors.

    An invalid webhook, an unknown id, a refused destination, a management API answer.
    """

    code = "sender_error"
