"""The prepared HMAC key computes exactly the standard library's HMAC-SHA256."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver import MalformedSignature
from fluxbase_receiver.signature import HmacKey, parse_signature_header


@given(key=st.binary(min_size=1, max_size=200), parts=st.lists(st.binary(max_size=300), max_size=4))
def test_digest_equals_the_standard_hmac_sha256(key: bytes, parts: list[bytes]) -> None:
    prepared = HmacKey(key)
    expected = hmac.digest(key, b"".join(parts), "sha256")
    assert prepared.digest(*parts) == expected
    assert prepared.digest(*parts) == expected  # the prepared hashes are not consumed


@given(
    timestamp=st.text("0123456789", max_size=20) | st.text(max_size=20),
    signature=st.text("0123456789abcdefABCDEF", min_size=63, max_size=65) | st.text(max_size=70),
    separator=st.sampled_from([",v1=", ", v1=", ",v1 =", ",v0="]),
)
def test_the_common_shape_parses_as_the_general_rules_do(
    timestamp: str, signature: str, separator: str
) -> None:
    header = f"t={timestamp}{separator}{signature}"
    general = f"{header},"  # a trailing empty part: never the one-step shape
    try:
        expected = parse_signature_header(general)
    except MalformedSignature:
        with pytest.raises(MalformedSignature):
            parse_signature_header(header)
    else:
        assert parse_signature_header(header) == expected
