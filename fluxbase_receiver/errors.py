"""Typed errors. Each carries a stable ``code`` and the HTTP ``status`` a receiver answers with."""

from __future__ import annotations


class WebhookError(Exception):
    """Base class of every refusal. ``str(error)`` is safe to show to the sender."""

    code: str = "webhook_error"
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
