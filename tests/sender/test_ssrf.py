"""The SSRF guard: non-global destinations are refused before any connection."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver.sender import (
    DestinationRefused,
    Sender,
    WebhookValidationError,
    check_address,
    check_url,
)
from fluxbase_receiver.sender.delivery import _GuardedConnector, destination_host, vetted
from tests.sender.conftest import make_webhook
from tests.sender.receivers import RawServer, ScriptedReceiver

REFUSED = [
    "127.0.0.1",
    "127.255.0.9",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "64:ff9b::a00:1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_are_refused(address: str) -> None:
    with pytest.raises(DestinationRefused, match="not a public address"):
        check_address(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_global_addresses_pass(address: str) -> None:
    check_address(address)


PRIVATE_NETWORKS = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "100.64.0.0/10")
]


@given(st.sampled_from(PRIVATE_NETWORKS), st.integers(min_value=0))
def test_every_address_of_a_private_network_is_refused(
    network: ipaddress.IPv4Network, offset: int
) -> None:
    address = network[offset % network.num_addresses]
    with pytest.raises(DestinationRefused):
        check_address(str(address))
    with pytest.raises(DestinationRefused):
        check_address(f"::ffff:{address}")


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("0.0.0.0", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "shared address space (CGNAT)"),
        ("fec0::1", "site-local"),
        ("240.0.0.1", "reserved"),
        ("10.0.0.1", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "link-local"),
    ],
)
def test_the_refusal_names_the_rule(address: str, rule: str) -> None:
    with pytest.raises(DestinationRefused) as refused:
        check_address(address)
    assert f" is {rule}, not a public address" in str(refused.value)


@pytest.fixture
def guarded(database: str) -> Iterator[Sender]:
    with Sender(database) as sender:  # allow_private_networks defaults to False
        yield sender


@pytest.fixture
def permissive(database: str) -> Iterator[Sender]:
    """The same database with the guard off: stores URLs the guarded sender refuses."""
    with Sender(database, allow_private_networks=True) as sender:
        yield sender


PRIVATE_URLS = [
    ("http://10.0.0.1/hook", "private"),
    ("http://[::1]/hook", "loopback"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("http://100.64.0.1:8080/", "shared address space (CGNAT)"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://localhost/hook", "loopback"),
]


@pytest.mark.parametrize(("url", "rule"), PRIVATE_URLS)
def test_the_refusal_is_recorded_on_the_delivery(
    guarded: Sender, permissive: Sender, url: str, rule: str
) -> None:
    webhook = make_webhook(permissive, url, max_retries=0)
    guarded.emit("INSERT", "orders", {"id": 1})
    guarded.deliver_pending()
    (delivery,) = guarded.webhooks.get_deliveries(webhook.id)
    assert delivery.status == "failed" and delivery.response_status is None
    assert delivery.error is not None and f"is {rule}, not a public address" in delivery.error
    assert "allow_private_networks=True" in delivery.error
    (attempt,) = guarded.get_attempts(delivery.id)
    assert attempt.outcome == "refused"


@pytest.mark.parametrize(("url", "rule"), PRIVATE_URLS)
def test_a_private_url_is_refused_when_saved(guarded: Sender, url: str, rule: str) -> None:
    with pytest.raises(WebhookValidationError) as refused:
        guarded.webhooks.create(name="hook", url=url)
    assert refused.value.errors[0]["field"] == "url"
    assert f"is {rule}, not a public address" in refused.value.errors[0]["message"]
    assert guarded.webhooks.list() == []


def test_a_loopback_receiver_gets_nothing_without_the_opt_in(
    guarded: Sender, permissive: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(permissive, hook_url, max_retries=0)
    guarded.emit("INSERT", "orders", {"id": 1})
    guarded.deliver_pending()
    assert target.requests == []
    result = guarded.webhooks.test(webhook.id)
    assert not result.success and result.error is not None
    assert "127.0.0.1 is loopback, not a public address" in result.error
    assert target.requests == []


def test_the_opt_in_reaches_a_loopback_receiver(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url)
    assert sender.webhooks.test(webhook.id).success
    assert len(target.requests) == 1


def addr_info(address: str) -> tuple[Any, ...]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return (family, socket.SOCK_STREAM, 6, "", (address, 443))


def test_only_vetted_addresses_are_connected_to() -> None:
    mixed = [addr_info(a) for a in ("10.0.0.7", "93.184.215.14", "::1", "2606:4700::1111")]
    assert [info[4][0] for info in vetted(mixed)] == ["93.184.215.14", "2606:4700::1111"]
    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.7 is private"):
        vetted([addr_info("10.0.0.7"), addr_info("169.254.169.254")])


class Rebinding(AbstractResolver):
    """A resolver whose answer for every name is a loopback address."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


async def connect_through_the_guard(url: str, resolver: AbstractResolver | None = None) -> str:
    """POST with the guarded connector alone (no check of the URL first); the error."""
    connector = _GuardedConnector(resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as failed:
            await session.post(url, data=b"{}")
    assert isinstance(failed.value.os_error, DestinationRefused)
    return str(failed.value.os_error)


def test_the_connector_refuses_a_literal_and_a_rebound_name_before_connecting() -> None:
    with RawServer() as server:
        literal = asyncio.run(connect_through_the_guard(f"http://127.0.0.1:{server.port}/"))
        rebound = asyncio.run(
            connect_through_the_guard(f"http://rebound.example:{server.port}/", Rebinding())
        )
    assert server.connections == 0
    assert literal.startswith("destination 127.0.0.1 is loopback")
    assert rebound.startswith("destination 127.0.0.1 is loopback")


DOTS = [".", "\u3002", "\uff0e", "\uff61"]
"""Full stops the client's IDNA mapping turns into ``.``."""
FULLWIDTH_DIGITS = str.maketrans("0123456789", "".join(chr(0xFF10 + d) for d in range(10)))


@st.composite
def spelled(draw: st.DrawFn, address: ipaddress.IPv4Address) -> str:
    """``address`` written in any form a system resolver or the client's IDNA step reads."""
    value, octets = int(address), list(address.packed)
    numbers = draw(
        st.sampled_from(
            [
                octets,
                [octets[0], octets[1], value & 0xFFFF],
                [octets[0], value & 0xFFFFFF],
                [value],
            ]
        )
    )
    forms = [draw(st.sampled_from([f"{n}", f"0{n:o}", f"0x{n:x}", f"0X{n:X}"])) for n in numbers]
    host = "".join(part + draw(st.sampled_from(DOTS)) for part in forms)[:-1]
    if draw(st.booleans()):
        host = host.translate(FULLWIDTH_DIGITS)
    return host + draw(st.sampled_from(["", "."]))


def in_network(network: str) -> st.SearchStrategy[ipaddress.IPv4Address]:
    block = ipaddress.ip_network(network)
    return st.integers(0, block.num_addresses - 1).map(lambda offset: block[offset])


@given(st.data(), st.sampled_from(["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16"]))
def test_every_spelling_of_a_refused_address_is_refused(data: st.DataObject, network: str) -> None:
    address = data.draw(in_network(network))
    url = f"http://{data.draw(spelled(address))}:8080/hook"
    with pytest.raises(DestinationRefused, match=f"destination {address} is "):
        check_url(url)


@given(st.data())
def test_every_spelling_of_a_public_address_is_that_address(data: st.DataObject) -> None:
    address = data.draw(in_network("93.184.0.0/16"))
    url = f"http://{data.draw(spelled(address))}/hook"
    assert destination_host(url) == str(address)
    check_url(url)
