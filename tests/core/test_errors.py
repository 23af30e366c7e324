"""The error tree: one root, ``FluxbaseError``; refusals, sender and client errors apart."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import fluxbase_receiver
import fluxbase_receiver.sender
from fluxbase_receiver import (
    EventInProgress,
    FluxbaseAPIError,
    FluxbaseClient,
    FluxbaseError,
    HandlerError,
    InvalidPayload,
    InvalidSignature,
    MalformedSignature,
    MethodNotAllowed,
    MissingSignature,
    PayloadTooLarge,
    Receiver,
    SenderError,
    SignatureError,
    TimestampOutsideTolerance,
    UnsupportedMediaType,
    WebhookError,
)
from fluxbase_receiver.sender import (
    APIError,
    DestinationRefused,
    NotFound,
    Sender,
    WebhookValidationError,
    check_url,
    management_app,
)
from tests.servers import free_port, run_asgi

PARENTS: dict[type[Exception], tuple[type[BaseException], ...]] = {
    FluxbaseError: (Exception,),
    WebhookError: (FluxbaseError,),
    MethodNotAllowed: (WebhookError,),
    PayloadTooLarge: (WebhookError,),
    UnsupportedMediaType: (WebhookError,),
    SignatureError: (WebhookError,),
    MissingSignature: (SignatureError,),
    MalformedSignature: (SignatureError,),
    TimestampOutsideTolerance: (SignatureError,),
    InvalidSignature: (SignatureError,),
    InvalidPayload: (WebhookError,),
    EventInProgress: (WebhookError,),
    HandlerError: (WebhookError,),
    SenderError: (FluxbaseError,),
    WebhookValidationError: (SenderError, ValueError),
    NotFound: (SenderError, LookupError),
    DestinationRefused: (SenderError, OSError),
    APIError: (SenderError,),
    FluxbaseAPIError: (FluxbaseError,),
}
NOT_REFUSALS = (SenderError, FluxbaseAPIError, *(c for c in PARENTS if SenderError in c.__mro__))
SERVICE_KEY = "service-key-0123456789abcdef"


@pytest.mark.parametrize("error", PARENTS, ids=lambda error: error.__name__)
def test_each_error_has_its_place_in_the_tree(error: type[Exception]) -> None:
    assert error.__bases__ == PARENTS[error]
    assert issubclass(error, FluxbaseError)
    assert isinstance(error.code, str) and error.code
    assert error.__doc__


def test_every_public_error_is_in_the_tree() -> None:
    public = {
        value
        for module in (fluxbase_receiver, fluxbase_receiver.sender)
        for value in map(module.__dict__.__getitem__, module.__all__)
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert public == set(PARENTS)


@pytest.mark.parametrize("error", NOT_REFUSALS, ids=lambda error: error.__name__)
def test_only_refusals_are_webhook_errors(error: type[Exception]) -> None:
    assert not issubclass(error, WebhookError)


def test_a_refusal_is_still_an_answer_with_its_status_and_code() -> None:
    outcome = Receiver(secret="s3cret").handle(b"{}", {})
    assert isinstance(outcome.error, MissingSignature)
    assert (outcome.status, outcome.body) == (
        401,
        {"error": "missing_signature", "message": str(outcome.error)},
    )


def test_an_invalid_webhook_is_a_sender_error_and_a_value_error(tmp_path: Path) -> None:
    with Sender(f"sqlite:///{tmp_path}/app.db") as sender:
        for catch in (SenderError, ValueError, FluxbaseError):
            with pytest.raises(catch) as refused:
                sender.webhooks.create(name="x", url="http://10.0.0.7/hook")
            assert isinstance(refused.value, WebhookValidationError)
            assert refused.value.code == "invalid_webhook"
            assert refused.value.errors[0]["field"] == "url"
        with pytest.raises(NotFound) as missing:
            sender.webhooks.get("00000000-0000-4000-8000-000000000000")
        assert isinstance(missing.value, LookupError)


def test_a_refused_destination_is_a_sender_error_and_an_os_error() -> None:
    with pytest.raises(DestinationRefused) as refused:
        check_url("http://127.0.0.1/hook")
    assert isinstance(refused.value, OSError) and isinstance(refused.value, FluxbaseError)
    assert refused.value.code == "destination_refused"
    assert "127.0.0.1" in str(refused.value)


def test_the_api_answers_an_invalid_webhook_with_400(tmp_path: Path) -> None:
    fields = {"name": "x", "url": "http://10.0.0.7/hook"}
    auth = {"Authorization": f"Bearer {SERVICE_KEY}"}
    with (
        Sender(f"sqlite:///{tmp_path}/app.db") as sender,
        run_asgi(management_app(sender, SERVICE_KEY)) as url,
    ):
        answer = httpx.post(f"{url}/api/v1/webhooks", json=fields, headers=auth, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["code"] == "INVALID_REQUEST_BODY"
    assert answer.json()["errors"][0]["field"] == "url"


def test_an_api_error_is_the_servers_answer() -> None:
    error = APIError(404, "NOT_FOUND", "Webhook not found")
    answer = error.response()
    assert (answer.status_code, answer.body) == (
        404,
        b'{"error":"Webhook not found","code":"NOT_FOUND"}',
    )


def test_the_client_raises_a_fluxbase_api_error_not_a_refusal() -> None:
    client = FluxbaseClient(f"http://127.0.0.1:{free_port()}", api_key=SERVICE_KEY)
    with pytest.raises(FluxbaseError) as unreachable:
        client.webhooks.list()
    assert isinstance(unreachable.value, FluxbaseAPIError)
    assert not isinstance(unreachable.value, WebhookError)
    assert (unreachable.value.status, unreachable.value.code) == (0, "UNREACHABLE")
    assert SERVICE_KEY not in str(unreachable.value)
