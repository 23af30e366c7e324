"""A declared Content-Length is refused before reading exactly when it passes the limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fluxbase_receiver import Receiver


@given(
    digits=st.text("0123456789", min_size=1, max_size=40),
    limit=st.integers(1, 10**20),
)
def test_a_declared_length_is_refused_exactly_past_the_limit(digits: str, limit: int) -> None:
    receiver = Receiver("secret", max_body_bytes=limit)
    refusal = receiver.precheck("POST", {"Content-Length": f" {digits} "})
    if int(digits) > limit:
        assert refusal is not None and refusal.status == 413
    else:
        assert refusal is None
