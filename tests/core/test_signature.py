"""Signing and verification against the independent vectors and the wire format's rules."""

from __future__ import annotations

from typing import Any

import pytest

from fluxbase_receiver import (
    FluxbaseClient,
    InvalidSignature,
    MalformedSignature,
    MissingSignature,
    SignatureError,
    TimestampOutsideTolerance,
    parse_signature_header,
    sign_legacy,
    sign_payload,
    verify_legacy_signature,
    verify_signature,
)
from tests.servers import SHARED_VECTORS, VECTORS_COPY, load_vectors

VECTORS = load_vectors()
IDS = [case["name"] for case in VECTORS]


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_sign_payload_reproduces_every_vector(case: dict[str, Any]) -> None:
    body = case["body"].encode("utf-8")
    assert sign_payload(body, case["secret"], timestamp=case["timestamp"]) == case["header"]
    assert sign_legacy(body, case["secret"]) == case["legacy_signature"]


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_every_vector_verifies(case: dict[str, Any]) -> None:
    body = case["body"].encode("utf-8")
    verify_signature(body, case["header"], case["secret"], now=case["timestamp"])
    verify_legacy_signature(body, case["legacy_signature"], case["secret"])


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_any_single_byte_change_to_the_body_is_refused(case: dict[str, Any]) -> None:
    body = case["body"].encode("utf-8")
    for index in range(len(body)):
        with pytest.raises(InvalidSignature):
            verify_signature(
                _flip(body, index), case["header"], case["secret"], now=case["timestamp"]
            )
        with pytest.raises(InvalidSignature):
            verify_legacy_signature(_flip(body, index), case["legacy_signature"], case["secret"])


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_changed_timestamp_or_signature_is_refused(case: dict[str, Any]) -> None:
    body = case["body"].encode("utf-8")
    t = case["timestamp"]
    with pytest.raises(InvalidSignature):
        verify_signature(body, f"t={t + 1},v1={case['v1']}", case["secret"], now=t)
    for index in range(len(case["v1"])):
        digit = case["v1"][index]
        other = "0" if digit != "0" else "1"
        forged = case["v1"][:index] + other + case["v1"][index + 1 :]
        with pytest.raises(InvalidSignature):
            verify_signature(body, f"t={t},v1={forged}", case["secret"], now=t)
    with pytest.raises(InvalidSignature):
        verify_signature(body, case["header"], case["secret"] + "x", now=t)


def test_header_parts_allow_whitespace_unknown_keys_and_several_signatures() -> None:
    case = VECTORS[0]
    body, t, v1 = case["body"], case["timestamp"], case["v1"]
    header = f"  v0=abc , t={t} ,v1={'0' * 64},  v2=zz,v1={v1} ,"
    verify_signature(body, header, case["secret"], now=t)
    assert parse_signature_header(header) == (str(t), ["0" * 64, v1])


def test_rotation_accepts_any_configured_secret_and_signs_with_each() -> None:
    body = b'{"event":"TEST","table":"test","record":{"test":true}}'
    header = sign_payload(body, ["old", "new"], timestamp=100)
    assert header.count("v1=") == 2
    verify_signature(body, header, "new", now=100)
    verify_signature(body, header, "old", now=100)
    verify_signature(body, sign_payload(body, "old", timestamp=100), ["new", "old"], now=100)
    with pytest.raises(InvalidSignature):
        verify_signature(body, header, ["other", "another"], now=100)


@pytest.mark.parametrize(
    "header",
    [
        "v1=abc",  # no t
        "t=100",  # no v1
        "t=100,v0=abc",  # only unknown schemes
        "t=abc,v1=00",  # t not digits
        "t=-5,v1=00",
        "t=1_000,v1=00",
        "t=١٢٣,v1=00",  # non-ASCII digits
        "t=100,v1=00,garbage",
        "t=100,t=101,v1=00",
        "t=" + "9" * 40 + ",v1=00",
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(MalformedSignature):
        verify_signature(b"{}", header, "secret", now=100)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header(header: str | None) -> None:
    with pytest.raises(MissingSignature):
        verify_signature(b"{}", header, "secret")


def test_non_hex_signature_does_not_match() -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(b"{}", "t=100,v1=zz-not-hex-ü", "secret", now=100)


def test_tolerance_applies_in_both_directions() -> None:
    body = b"{}"
    header = sign_payload(body, "s", timestamp=1_000_000)
    verify_signature(body, header, "s", now=1_000_000 + 300)
    verify_signature(body, header, "s", now=1_000_000 - 300)
    with pytest.raises(TimestampOutsideTolerance):
        verify_signature(body, header, "s", now=1_000_000 + 301)
    with pytest.raises(TimestampOutsideTolerance):
        verify_signature(body, header, "s", now=1_000_000 - 301)
    verify_signature(body, header, "s", tolerance=None, now=0)
    verify_signature(body, header, "s", tolerance=10_000, now=1_005_000)


def test_every_signature_error_is_a_401_signature_error() -> None:
    for error in (
        MissingSignature,
        MalformedSignature,
        TimestampOutsideTolerance,
        InvalidSignature,
    ):
        assert issubclass(error, SignatureError)
        assert error("x").status == 401


def test_secret_is_used_verbatim_without_prefix_stripping_or_decoding() -> None:
    body = b"{}"
    header = sign_payload(body, "whsec_c2VjcmV0", timestamp=5)
    verify_signature(body, header, "whsec_c2VjcmV0", now=5)
    for other in ("c2VjcmV0", "secret"):
        with pytest.raises(InvalidSignature):
            verify_signature(body, header, other, now=5)


@pytest.mark.parametrize("secret", ["", [], [""]])
def test_empty_secrets_are_refused(secret: Any) -> None:
    with pytest.raises(ValueError):
        sign_payload(b"{}", secret)


def test_error_messages_never_contain_the_secret_or_the_expected_signature() -> None:
    case = VECTORS[0]
    with pytest.raises(SignatureError) as caught:
        verify_signature(
            case["body"], f"t={case['timestamp']},v1=00", case["secret"], now=case["timestamp"]
        )
    assert case["secret"] not in str(caught.value)
    assert case["v1"] not in str(caught.value)


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_client_helper_accepts_raw_bodies_dicts_and_legacy_digests(case: dict[str, Any]) -> None:
    import json

    verify = FluxbaseClient.verify_webhook_signature
    raw, secret, t = case["body"], case["secret"], case["timestamp"]
    assert verify(raw, case["header"], secret, now=t)
    assert verify(raw.encode(), case["header"], secret, now=t)
    assert verify(raw, case["legacy_signature"], secret)
    # A decoded dict is re-encoded the way the Go server writes JSON (compact, HTML-escaped).
    assert verify(json.loads(raw), case["header"], secret, now=t)
    assert not verify(raw, case["header"], secret)  # stale under the default tolerance
    assert not verify(raw + " ", case["header"], secret, now=t)
    assert not verify(raw, None, secret)
    assert not verify(raw, "t=1,nonsense", secret)


def test_the_shipped_vectors_are_the_shared_ones() -> None:
    if not SHARED_VECTORS.exists():
        pytest.skip(f"no shared vectors at {SHARED_VECTORS} to compare the shipped copy with")
    assert VECTORS_COPY.read_bytes() == SHARED_VECTORS.read_bytes()


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_fluxbase_headers_are_what_the_server_sends(case: dict[str, Any]) -> None:
    from fluxbase_receiver import fluxbase_headers

    headers = fluxbase_headers(case["body"], case["secret"], timestamp=case["timestamp"])
    assert headers == {
        "Content-Type": "application/json",
        "User-Agent": "Fluxbase-Webhooks/1.0",
        "X-Fluxbase-Signature": case["header"],
        "X-Webhook-Signature": case["legacy_signature"],
    }
