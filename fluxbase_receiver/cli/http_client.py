"""The HTTP client of ``send`` and ``listen --forward-to`` (standard library only)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from fluxbase_receiver.cli.arguments import CLIError

ANSWER_LIMIT = 65_536
"""At most this many bytes of an answer are read (``send`` prints them, ``listen`` forwards)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Report a 3xx as the answer instead of following it (a webhook is not redirected)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post(
    url: str, body: bytes, headers: Mapping[str, str], timeout: float
) -> tuple[int, str, bytes, bool]:
    """POST and return ``(status, reason, body, truncated)``; any HTTP status is an answer.

    At most :data:`ANSWER_LIMIT` bytes of the answer are read; ``truncated`` says there
    was more.
    """
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, reason, answer = (
                response.status,
                response.reason,
                response.read(ANSWER_LIMIT + 1),
            )
    except urllib.error.HTTPError as refusal:
        with refusal:
            status, reason, answer = refusal.code, refusal.reason, refusal.read(ANSWER_LIMIT + 1)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        raise CLIError(f"cannot reach {url}: {reason}") from None
    return status, reason, answer[:ANSWER_LIMIT], len(answer) > ANSWER_LIMIT
