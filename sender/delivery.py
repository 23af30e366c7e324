"""HTTP delivery: the SSRF guard, one POST per attempt, and the retry policy.

Sends go through one pooled :class:`aiohttp.ClientSession`. The guard vets every
address a host name resolves to and hands the connector only vetted addresses, so
the connection is made to exactly the address that was checked (no second lookup a
DNS rebinding could change). Literal IP URLs are vetted before any connection.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from fluxbase_receiver.signature import fluxbase_headers

__all__ = [
    "MAX_STORED_BODY",
    "AttemptResult",
    "DestinationRefused",
    "HttpSender",
    "backoff_delay",
    "check_address",
    "parse_retry_after",
    "signed_headers",
]

MAX_STORED_BODY = 16 * 1024
"""Bytes of a receiver's answer kept in the delivery history."""

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_RETRY_AFTER_STATUSES = (429, 503)


class DestinationRefused(OSError):
    """The webhook URL points at an address the SSRF guard does not allow."""


def check_address(address: str) -> None:
    """Raise :class:`DestinationRefused` unless ``address`` is a global unicast IP.

    Refused: private, loopback, link-local, CGNAT (100.64/10), unspecified,
    multicast, reserved, IPv6 unique-local and site-local, and IPv4-mapped or
    NAT64-embedded forms of any of those.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in ipaddress.ip_network("64:ff9b::/96"):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    refused = (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )
    if refused:
        raise DestinationRefused(
            f"destination {ip} is not a public address (private networks are not allowed;"
            " pass allow_private_networks=True for local development)"
        )


class _GuardedResolver(AbstractResolver):
    """Resolves with the system resolver and keeps only addresses the guard allows."""

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refusal: DestinationRefused | None = None
        for result in found:
            try:
                check_address(result["host"])
            except DestinationRefused as error:
                refusal = error
            else:
                allowed.append(result)
        if not allowed:
            raise refusal or DestinationRefused(f"{host} did not resolve to any address")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


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
        """A 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


class HttpSender:
    """A pooled HTTP client that POSTs webhook bodies under the SSRF guard.

    Use as ``async with HttpSender(...) as http:``. ``limit`` caps open connections.
    """

    def __init__(self, *, allow_private_networks: bool = False, limit: int = 100) -> None:
        self.allow_private_networks = allow_private_networks
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpSender:
        resolver = None if self.allow_private_networks else _GuardedResolver()
        connector = aiohttp.TCPConnector(limit=self._limit, resolver=resolver)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=True
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
                _check_literal_host(url)
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw = await response.content.read(MAX_STORED_BODY)
                if not response.content.at_eof():
                    response.close()
                text = raw.decode("utf-8", "replace")
                status = response.status
                error = None
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
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return AttemptResult(None, None, _describe(error), _since(started))


def _check_literal_host(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: the resolver vets what it resolves to
    check_address(host)


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


def backoff_delay(
    failures: int, base: float, cap: float, rng: random.Random | Any = random
) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**(n-1))]``."""
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 60))
    return float(rng.uniform(0.0, ceiling))


def signed_headers(
    body: bytes, secret: str, event_id: str, attempt: int, custom: dict[str, str]
) -> dict[str, str]:
    """The request headers of one attempt: signed now, with a fresh ``t``."""
    return {
        **custom,
        **fluxbase_headers(body, secret),
        "X-Fluxbase-Event-Id": event_id,
        "X-Fluxbase-Delivery-Attempt": str(attempt),
    }
