"""The SSRF guard: non-global destinations are refused before any connection."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver.sender import DestinationRefused, Sender, check_address
from tests.sender.conftest import make_webhook
from tests.sender.receivers import ScriptedReceiver

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


@pytest.fixture
def guarded(database: str) -> Iterator[Sender]:
    with Sender(database) as sender:  # allow_private_networks defaults to False
        yield sender


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "http://100.64.0.1:8080/",
        "http://[::ffff:10.0.0.1]/hook",
        "http://localhost/hook",
    ],
)
def test_the_refusal_is_recorded_on_the_delivery(guarded: Sender, url: str) -> None:
    webhook = make_webhook(guarded, url, max_retries=0)
    guarded.emit("INSERT", "orders", {"id": 1})
    guarded.deliver_pending()
    (delivery,) = guarded.webhooks.get_deliveries(webhook.id)
    assert delivery.status == "failed" and delivery.response_status is None
    assert delivery.error is not None and "is not a public address" in delivery.error
    assert "allow_private_networks=True" in delivery.error
    (attempt,) = guarded.get_attempts(delivery.id)
    assert attempt.outcome == "refused"


def test_a_loopback_receiver_gets_nothing_without_the_opt_in(
    guarded: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(guarded, hook_url, max_retries=0)
    guarded.emit("INSERT", "orders", {"id": 1})
    guarded.deliver_pending()
    assert target.requests == []
    result = guarded.webhooks.test(webhook.id)
    assert not result.success and result.error is not None
    assert "127.0.0.1 is not a public address" in result.error
    assert target.requests == []


def test_the_opt_in_reaches_a_loopback_receiver(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    webhook = make_webhook(sender, hook_url)
    assert sender.webhooks.test(webhook.id).success
    assert len(target.requests) == 1


class _Answers:
    """A stand-in system resolver: the addresses a name "resolves" to."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, object]]:
        return [
            {"hostname": host, "host": a, "port": port, "family": 0, "proto": 0, "flags": 0}
            for a in self.addresses
        ]


def test_the_connector_only_gets_vetted_addresses() -> None:
    import asyncio

    from fluxbase_receiver.sender.delivery import _GuardedResolver

    async def resolve(*addresses: str) -> list[str]:
        resolver = _GuardedResolver()
        resolver._inner = _Answers(*addresses)  # type: ignore[assignment]
        return [r["host"] for r in await resolver.resolve("rebinding.example", 443)]

    assert asyncio.run(resolve("10.0.0.7", "93.184.215.14", "::1")) == ["93.184.215.14"]
    with pytest.raises(DestinationRefused, match="not a public address"):
        asyncio.run(resolve("127.0.0.1", "169.254.169.254"))
