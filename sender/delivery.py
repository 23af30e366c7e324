"""HTTP delivery: the SSRF guard, one POST per attempt, and ``Retry-After``.

What an attempt's result means for its delivery is decided by
:class:`~fluxbase_receiver.sender.policy.RetryPolicy`.

Sends go through one pooled :class:`aiohttp.ClientSession`. The guard judges the
exact address each connection is about to be made to, right before ``connect()``,
whether it came from an IP literal in the URL or from a DNS answer: no spelling of
the host and no DNS rebinding can put a different address between the check and the
connection. :func:`check_url` refuses the same destinations earlier, when a webhook
is saved, by spelling the URL's host the way the HTTP client will.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import time
import zlib
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from yarl import URL

from fluxbase_receiver.errors import SenderError
from fluxbase_receiver.signature import HmacKey, headers_with_keys, secret_keys

__all__ = [
    "MAX_STORED_BODY",
    "AttemptResult",
    "DestinationRefused",
    "HttpSender",
    "check_address",
    "check_url",
    "destination_host",
    "parse_retry_after",
    "signed_headers",
]

MAX_STORED_BODY = 16 * 1024
"""Bytes of a receiver's answer kept in the delivery history."""

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_RETRY_AFTER_STATUSES = (429, 503)
_LEGACY_IPV4 = re.compile(r"(?=.*[0-9])[0-9a-fx.]+", re.IGNORECASE)
_COMPRESSED = frozenset({"gzip", "x-gzip", "deflate"})
_ANY_ZLIB_HEADER = 32 + zlib.MAX_WBITS
"""``wbits`` accepting both the gzip and the zlib header."""


class DestinationRefused(SenderError, OSError):
    """The webhook URL points at an address the SSRF guard does not allow."""

    code = "destination_refused"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _rule(ip: IPAddress) -> str | None:
    """The rule that refuses ``ip``, or ``None`` for a global unicast address."""
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "shared address space (CGNAT)"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "not globally routable"),
    )
    return next((name for refused, name in checks if refused), None)


def _refused(destination: object, rule: str) -> DestinationRefused:
    return DestinationRefused(
        f"destination {destination} is {rule}, not a public address (private networks are"
        " not allowed; pass allow_private_networks=True for local development)"
    )


def check_address(address: str) -> None:
    """Raise :class:`DestinationRefused` unless ``address`` is a global unicast IP.

    Refused: private, loopback, link-local, CGNAT (100.64/10), unspecified,
    multicast, reserved, IPv6 unique-local and site-local, and IPv4-mapped or
    NAT64-embedded forms of any of those. The message names the rule.
    """
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    rule = _rule(ip)
    if rule is not None:
        raise _refused(ip, rule)


def destination_host(url: str) -> str:
    """The host an HTTP client connects to for ``url``, in one canonical spelling.

    The host is normalised as the client does it (IDNA / UTS-46 mapping: fullwidth
    digits, ideographic full stops and circled digits become ASCII; lowercase), a
    trailing dot is dropped, and the legacy IPv4 forms a system resolver accepts
    (``127.1``, ``2130706433``, ``0177.0.0.1``, ``0x7f.1``) become dotted quads.
    Raises ``ValueError`` when the URL has no valid host.
    """
    host = (URL(url).raw_host or "").rstrip(".")
    if not host:
        raise ValueError("url has no host")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return socket.inet_ntoa(socket.inet_aton(host))
        except OSError:
            pass
    return host


def check_url(url: str) -> None:
    """Raise :class:`DestinationRefused` when ``url`` names a refused address literally.

    Covers every spelling of an IP address and the ``localhost`` names. Other names
    are judged by the addresses they resolve to, when a connection is made.
    """
    host = destination_host(url)
    if host == "localhost" or host.endswith(".localhost"):
        raise _refused(host, "loopback")
    try:
        check_address(host)
    except ValueError:
        return  # a name


def vetted(addr_infos: list[Any]) -> list[Any]:
    """The ``getaddrinfo``-style entries whose address the guard allows.

    Raises the first :class:`DestinationRefused` when none is allowed.
    """
    allowed: list[Any] = []
    refusal: DestinationRefused | None = None
    for info in addr_infos:
        try:
            check_address(info[4][0])
        except DestinationRefused as error:
            refusal = refusal or error
        else:
            allowed.append(info)
    if not allowed:
        raise refusal or DestinationRefused("no address to connect to")
    return allowed


class _GuardedConnector(aiohttp.TCPConnector):
    """A connector that connects only to addresses the guard allows.

    Every connection attempt passes through ``_wrap_create_connection`` with the
    socket addresses it is about to ``connect()`` to (literal or resolved): they are
    vetted there, so the address checked is the address connected to.
    """

    async def _wrap_create_connection(
        self, *args: Any, addr_infos: list[Any], req: Any, **kwargs: Any
    ) -> Any:
        try:
            allowed = vetted(addr_infos)
        except DestinationRefused as refusal:
            raise aiohttp.ClientConnectorError(req.connection_key, refusal) from None
        return await super()._wrap_create_connection(*args, addr_infos=allowed, req=req, **kwargs)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one POST gave: an HTTP answer, or an error before one arrived."""

    status: int | None
    body: str | None
    error: str | None
    duration_ms: float
    retry_after: float | None = None
    refused: bool = False

    @property
    def ok(self) -> bool:
        """A whole 2xx answer."""
        return self.status is not None and 200 <= self.status < 300 and self.error is None


class HttpSender:
    """A pooled HTTP client that POSTs webhook bodies under the SSRF guard.

    Use as ``async with HttpSender(...) as http:``. ``limit`` caps open connections.
    """

    def __init__(self, *, allow_private_networks: bool = False, limit: int = 100) -> None:
        self.allow_private_networks = allow_private_networks
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpSender:
        kind = aiohttp.TCPConnector if self.allow_private_networks else _GuardedConnector
        self._session = aiohttp.ClientSession(
            connector=kind(limit=self._limit),
            trust_env=False,
            auto_decompress=False,
            headers={"Accept-Encoding": "gzip, deflate"},
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> AttemptResult:
        """POST ``body`` once; never raises for network or HTTP failures."""
        assert self._session is not None, "use HttpSender as an async context manager"
        started = time.perf_counter()
        try:
            if not self.allow_private_networks:
                check_url(url)
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw, error = await _read_capped(response)
                if not response.content.at_eof():
                    response.close()
                status = response.status
                if 300 <= status < 400:
                    location = response.headers.get("Location", "")
                    error = f"redirect {status} not followed (Location: {location[:200]})"
                elif not 200 <= status < 300:
                    error = f"receiver answered {status}"
                retry_after = (
                    parse_retry_after(response.headers.get("Retry-After"))
                    if status in _RETRY_AFTER_STATUSES
                    else None
                )
                text = _storable(raw.decode("utf-8", "replace"))
                return AttemptResult(status, text, error, _since(started), retry_after)
        except DestinationRefused as error:
            return AttemptResult(None, None, str(error), _since(started), refused=True)
        except aiohttp.ClientConnectorError as error:
            cause = error.os_error
            if isinstance(cause, DestinationRefused):
                return AttemptResult(None, None, str(cause), _since(started), refused=True)
            return AttemptResult(None, None, f"connection failed: {cause}", _since(started))
        except TimeoutError:
            return AttemptResult(None, None, f"timed out after {timeout:g} s", _since(started))
        except aiohttp.ServerDisconnectedError:
            closed = "connection closed by the receiver before it answered"
            return AttemptResult(None, None, closed, _since(started))
        except aiohttp.ClientResponseError as error:
            invalid = "invalid answer: " + " ".join(str(error.message).split())
            return AttemptResult(None, None, _storable(invalid[:500]), _since(started))
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return AttemptResult(None, None, _storable(_describe(error)), _since(started))


async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, str | None]:
    """Up to :data:`MAX_STORED_BODY` bytes of the answer, and why it was cut off if it was.

    Reads chunk by chunk until the cap or the end, inflating a gzip or deflate answer
    only up to the cap (a compression bomb never grows past it). Nothing beyond the
    cap is read or kept.
    """
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    inflater = zlib.decompressobj(_ANY_ZLIB_HEADER) if encoding in _COMPRESSED else None
    kept = bytearray()
    try:
        async for chunk in response.content.iter_any():
            if inflater is not None:
                chunk = inflater.decompress(chunk, MAX_STORED_BODY - len(kept))
            kept += chunk
            if len(kept) >= MAX_STORED_BODY:
                break
    except aiohttp.ClientPayloadError as error:
        return bytes(kept), f"answer cut off: {_describe(error)}"
    except zlib.error as error:
        return bytes(kept), f"answer not readable as {encoding}: {error}"
    return bytes(kept[:MAX_STORED_BODY]), None


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}"[:500] if text else type(error).__name__


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP-date)."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@functools.lru_cache(maxsize=64)
def _keys(secret: str) -> tuple[HmacKey, ...]:
    """A webhook secret's prepared HMAC key, made once for all of its sends."""
    return secret_keys(secret)


def signed_headers(
    body: bytes, secret: str, event_id: str, attempt: int, custom: dict[str, str]
) -> dict[str, str]:
    """The request headers of one attempt: signed now, with a fresh ``t``."""
    return {
        **custom,
        **headers_with_keys(body, _keys(secret)),
        "X-Fluxbase-Event-Id": event_id,
        "X-Fluxbase-Delivery-Attempt": str(attempt),
    }


def _storable(text: str) -> str:
    """``text`` with each NUL as U+FFFD: a PostgreSQL text column cannot hold NUL, and an
    answer that cannot be recorded would be retried for ever."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
