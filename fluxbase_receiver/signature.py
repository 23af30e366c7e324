"""The ``X-Fluxbase-Signature`` scheme: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``.

The signed message is ``b"<t>." + body``; the key is the secret's UTF-8 bytes, used
exactly as configured. This module is the only place signing and verifying are written.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from fluxbase_receiver.errors import (
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    TimestampOutsideTolerance,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "LEGACY_SIGNATURE_HEADER",
    "SIGNATURE_HEADER",
    "USER_AGENT",
    "fluxbase_headers",
    "parse_signature_header",
    "sign_legacy",
    "sign_payload",
    "verify_legacy_signature",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Fluxbase-Signature"
LEGACY_SIGNATURE_HEADER = "X-Webhook-Signature"
USER_AGENT = "Fluxbase-Webhooks/1.0"
"""The ``User-Agent`` a Fluxbase server sends with every webhook."""
DEFAULT_TOLERANCE = 300.0

Secrets = str | Sequence[str]

_SIMPLE_HEADER = re.compile(r"t=([0-9]{1,18}),v1=([0-9a-fA-F]{64})")
_BLOCK = 64  # SHA-256's block size in bytes
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


class HmacKey:
    """An HMAC-SHA256 key (RFC 2104) with its padded key blocks hashed once.

    Each digest copies the two prepared hashes instead of setting the key up again,
    which is most of the cost of an HMAC over a small webhook body.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        block = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(block.translate(_INNER_PAD))
        self._outer = hashlib.sha256(block.translate(_OUTER_PAD))

    def digest(self, *parts: bytes) -> bytes:
        """The HMAC-SHA256 of the concatenated ``parts``."""
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def secret_keys(secret: Secrets) -> tuple[HmacKey, ...]:
    """The HMAC keys for one secret or several (rotation), from their UTF-8 bytes."""
    secrets = (secret,) if isinstance(secret, str) else tuple(secret)
    if not secrets:
        raise ValueError("at least one webhook secret is required")
    for item in secrets:
        if not isinstance(item, str) or not item:
            raise ValueError("webhook secrets must be non-empty strings")
    return tuple(HmacKey(item.encode("utf-8")) for item in secrets)


def _as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def sign_payload(body: bytes | str, secret: Secrets, timestamp: int | None = None) -> str:
    """Return the ``X-Fluxbase-Signature`` value for ``body``: one ``v1=`` per secret."""
    return sign_with_keys(_as_bytes(body), secret_keys(secret), timestamp)


def fluxbase_headers(
    body: bytes | str, secret: Secrets, timestamp: int | None = None
) -> dict[str, str]:
    """The headers a Fluxbase server sends with ``body``.

    ``Content-Type``, ``User-Agent``, ``X-Fluxbase-Signature`` (one ``v1`` per secret,
    signed at ``timestamp``, default now) and the legacy ``X-Webhook-Signature`` (the
    first secret).
    """
    return headers_with_keys(_as_bytes(body), secret_keys(secret), timestamp)


def headers_with_keys(
    body: bytes, keys: Sequence[HmacKey], timestamp: int | None = None
) -> dict[str, str]:
    """:func:`fluxbase_headers` with prepared keys (the sender's hot path)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign_with_keys(body, keys, timestamp),
        LEGACY_SIGNATURE_HEADER: keys[0].digest(body).hex(),
    }


def sign_with_keys(body: bytes, keys: Sequence[HmacKey], timestamp: int | None = None) -> str:
    """:func:`sign_payload` with prepared keys (for hot paths that sign repeatedly)."""
    t = str(int(time.time()) if timestamp is None else int(timestamp))
    prefix = t.encode("ascii") + b"."
    parts = [f"t={t}"]
    parts.extend(f"v1={key.digest(prefix, body).hex()}" for key in keys)
    return ",".join(parts)


def parse_signature_header(header: str) -> tuple[str, list[str]]:
    """Split a signature header into its timestamp digits and its ``v1`` signatures.

    Whitespace around parts is allowed, unknown keys are ignored, several ``v1`` may
    appear. Raises :class:`MalformedSignature` when ``t`` or ``v1`` is missing or a part
    is not ``key=value``.
    """
    simple = _SIMPLE_HEADER.fullmatch(header)
    if simple is not None:  # the common "t=<digits>,v1=<hex>" shape, read in one step
        return simple[1], [simple[2]]
    timestamp: str | None = None
    signatures: list[str] = []
    for raw_part in header.split(","):
        part = raw_part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise MalformedSignature("signature header parts must be key=value")
        key, value = key.strip(), value.strip()
        if key == "t":
            if not (value.isascii() and value.isdigit()) or len(value) > 18:
                raise MalformedSignature("signature timestamp t must be unix seconds")
            if timestamp is not None and timestamp != value:
                raise MalformedSignature("signature header has conflicting t values")
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise MalformedSignature("signature header has no t= timestamp")
    if not signatures:
        raise MalformedSignature("signature header has no v1= signature")
    return timestamp, signatures


def _matches(expected: bytes, candidates: Sequence[str]) -> bool:
    found = False
    for candidate in candidates:
        try:
            raw = bytes.fromhex(candidate)
        except ValueError:
            continue
        # Check every candidate: the time taken does not tell which one matched.
        found |= hmac.compare_digest(expected, raw)
    return found


def verify_signature(
    body: bytes | str,
    header: str | None,
    secret: Secrets,
    *,
    tolerance: float | None = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check an ``X-Fluxbase-Signature`` header against ``body``; return or raise.

    Any ``v1`` matching any secret passes (rotation). ``tolerance`` seconds apply in both
    directions; ``None`` turns the age check off (replaying stored events).
    """
    verify_with_keys(_as_bytes(body), header, secret_keys(secret), tolerance, now)


def verify_with_keys(
    body: bytes,
    header: str | None,
    keys: Sequence[HmacKey],
    tolerance: float | None,
    now: float | None,
) -> None:
    """:func:`verify_signature` with prepared keys (the receiver's hot path)."""
    simple = _SIMPLE_HEADER.fullmatch(header) if header else None
    if simple is not None:  # the common "t=<digits>,v1=<hex>" shape, read in one step
        timestamp, candidates = simple[1], [simple[2]]
    elif header is None or not header.strip():
        raise MissingSignature(f"missing {SIGNATURE_HEADER} header")
    else:
        timestamp, candidates = parse_signature_header(header)
    prefix = timestamp.encode("ascii") + b"."
    for key in keys:
        if _matches(key.digest(prefix, body), candidates):
            break
    else:
        raise InvalidSignature("signature does not match the body")
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - int(timestamp)) > tolerance:
            raise TimestampOutsideTolerance(
                f"signature timestamp is outside the {tolerance:g} s tolerance"
            )


def sign_legacy(body: bytes | str, secret: str) -> str:
    """Return the legacy ``X-Webhook-Signature`` value: hex HMAC-SHA256 of the body alone."""
    (key,) = secret_keys(secret)
    return key.digest(_as_bytes(body)).hex()


def verify_legacy_signature(body: bytes | str, signature: str | None, secret: Secrets) -> None:
    """Check a legacy ``X-Webhook-Signature`` (no timestamp, so replayable: opt in knowingly)."""
    verify_legacy_with_keys(_as_bytes(body), signature, secret_keys(secret))


def verify_legacy_with_keys(body: bytes, signature: str | None, keys: Sequence[HmacKey]) -> None:
    """:func:`verify_legacy_signature` with prepared keys."""
    if signature is None or not signature.strip():
        raise MissingSignature(f"missing {LEGACY_SIGNATURE_HEADER} header")
    candidates = [signature.strip()]
    if not any(_matches(key.digest(body), candidates) for key in keys):
        raise InvalidSignature("signature does not match the body")
