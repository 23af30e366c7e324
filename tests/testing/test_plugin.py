"""The pytest plugin from a user's point of view: throwaway test files using only the fixtures."""

from __future__ import annotations

import textwrap

import pytest

USER_TESTS = """
import re
import uuid

import pytest

from fluxbase_receiver import Receiver, verify_legacy_signature, verify_signature


@pytest.fixture
def receiver(fluxbase_secret):
    receiver = Receiver(fluxbase_secret)

    @receiver.on("orders", "INSERT", "UPDATE")
    def on_order(event):
        pass

    @receiver.on("*", "DELETE")
    async def on_delete(event):
        pass

    return receiver


def test_secret_is_random(fluxbase_secret):
    assert isinstance(fluxbase_secret, str) and len(fluxbase_secret) >= 32


@pytest.mark.parametrize("kind", ["INSERT", "UPDATE", "DELETE", "TEST"])
def test_event_factory_defaults_look_like_a_fluxbase_server(fluxbase_event, kind):
    event = fluxbase_event(kind)
    assert event["event"] == kind
    assert event["schema"] == "public"
    assert event["table"] == ("test" if kind == "TEST" else "users")
    assert re.fullmatch(r"\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{9}Z", event["timestamp"])
    uuid.UUID(event["webhook_id"])
    if kind == "TEST":
        assert event["record"] == {"test": True}
    else:
        assert event["record"]["email"] == "ada@example.com"
    assert ("old_record" in event) is (kind in ("INSERT", "UPDATE"))
    if kind == "UPDATE":
        assert event["old_record"]["updated_at"] < event["record"]["updated_at"]


def test_event_factory_takes_what_is_given(fluxbase_event):
    event = fluxbase_event(
        "UPDATE", table="orders", schema="shop", record={"id": 1, "status": "paid"},
        old_record={"id": 1, "status": "new"}, webhook_id="wh", extra_field=[1, 2],
    )
    assert event == {
        "event": "UPDATE", "table": "orders", "schema": "shop",
        "record": {"id": 1, "status": "paid"}, "old_record": {"id": 1, "status": "new"},
        "timestamp": event["timestamp"], "webhook_id": "wh", "extra_field": [1, 2],
    }


def test_signer_sends_what_a_fluxbase_server_sends(
    fluxbase_signer, fluxbase_event, fluxbase_secret
):
    body, headers = fluxbase_signer(fluxbase_event("INSERT", table="orders"))
    assert set(headers) == {
        "Content-Type", "User-Agent", "X-Fluxbase-Signature", "X-Webhook-Signature"
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "Fluxbase-Webhooks/1.0"
    assert b'"table":"orders"' in body
    verify_signature(body, headers["X-Fluxbase-Signature"], fluxbase_secret)
    verify_legacy_signature(body, headers["X-Webhook-Signature"], fluxbase_secret)


def test_signer_options(fluxbase_signer, fluxbase_event, receiver):
    event = fluxbase_event("INSERT", table="orders")
    assert receiver.handle(*fluxbase_signer(event)).status == 200
    stale = receiver.handle(*fluxbase_signer(event, skew=-3600))
    assert (stale.status, stale.body["error"]) == (401, "timestamp_outside_tolerance")
    wrong = receiver.handle(*fluxbase_signer(event, wrong_secret=True))
    assert (wrong.status, wrong.body["error"]) == (401, "invalid_signature")
    body, headers = fluxbase_signer(event, legacy_only=True)
    assert "X-Fluxbase-Signature" not in headers
    assert receiver.handle(body, headers).body["error"] == "missing_signature"


def test_several_signatures_for_secret_rotation(fluxbase_signer, fluxbase_secret):
    body, headers = fluxbase_signer(secret=["old-secret", fluxbase_secret])
    assert headers["X-Fluxbase-Signature"].count("v1=") == 2
    verify_signature(body, headers["X-Fluxbase-Signature"], fluxbase_secret)
    verify_signature(body, headers["X-Fluxbase-Signature"], "old-secret")


def test_recorder_tells_which_handlers_ran(
    receiver, fluxbase_signer, fluxbase_event, fluxbase_recorder
):
    fluxbase_recorder.watch(receiver)
    receiver.handle(*fluxbase_signer(fluxbase_event("INSERT", table="orders", record={"id": 1})))
    receiver.handle(*fluxbase_signer(fluxbase_event("DELETE", table="orders", record={"id": 1})))
    receiver.handle(*fluxbase_signer(fluxbase_event("INSERT", table="users")))
    assert fluxbase_recorder.ran == ["receiver.<locals>.on_order", "receiver.<locals>.on_delete"]
    event = fluxbase_recorder.assert_ran("on_order", times=1, event="INSERT", table="orders")
    assert event.record == {"id": 1}
    fluxbase_recorder.assert_ran("on_delete", table="public.orders")
    with pytest.raises(AssertionError, match="on_order event=UPDATE did not run"):
        fluxbase_recorder.assert_ran("on_order", event="UPDATE")
    with pytest.raises(AssertionError, match="ran 1 time"):
        fluxbase_recorder.assert_not_ran("on_delete")
    assert [e.event for e in fluxbase_recorder.events()] == ["INSERT", "DELETE"]
"""


def test_the_fixtures_work_in_a_users_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=10)


def test_the_plugin_is_loaded_through_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        def test_fixture(fluxbase_secret):
            assert fluxbase_secret
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    disabled = pytester.runpytest_subprocess("-q", "-p", "no:fluxbase_receiver")
    disabled.assert_outcomes(errors=1)
    disabled.stdout.fnmatch_lines(["*fixture 'fluxbase_secret' not found*"])


def test_the_recorder_stops_watching_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        from fluxbase_receiver import Receiver
        from fluxbase_receiver.testing import make_event, sign_event

        receiver = Receiver("s", idempotency=False)
        calls = []
        recorders = []

        @receiver.on("*")
        def handler(event):
            calls.append(event)

        def deliver():
            body, headers = sign_event(make_event("INSERT"), "s")
            assert receiver.handle(body, headers).ok

        def test_watch(fluxbase_recorder):
            fluxbase_recorder.watch(receiver)
            deliver()
            fluxbase_recorder.assert_ran(handler, times=1)
            recorders.append(fluxbase_recorder)

        def test_after():
            deliver()
            assert len(calls) == 2  # the handler itself still runs
            assert len(recorders[0].calls) == 1  # the finished test's recorder stopped
        """
    )
    pytester.runpytest("-q").assert_outcomes(passed=2)


def test_posting_to_something_else_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user=textwrap.dedent(
            """
            import pytest

            def test_post(fluxbase_post):
                with pytest.raises(TypeError, match="cannot post to int"):
                    fluxbase_post(42)
            """
        )
    )
    pytester.runpytest("-q").assert_outcomes(passed=1)


LAMBDA_TESTS = """
import base64

import pytest

from fluxbase_receiver import Receiver

SEEN = []


@pytest.fixture
def handler(fluxbase_secret):
    receiver = Receiver(fluxbase_secret)

    def handler(event, context):
        SEEN.append((event, context))
        raw = event["body"]
        body = base64.b64decode(raw) if event["isBase64Encoded"] else raw.encode()
        method = event.get("httpMethod") or event["requestContext"]["http"]["method"]
        outcome = receiver.handle(body, event["headers"], method)
        encoded = base64.b64encode(outcome.body_bytes()).decode()
        return {"statusCode": outcome.status, "body": encoded, "isBase64Encoded": True}

    SEEN.clear()
    return handler


@pytest.mark.parametrize("fmt", ["v2", "v1", "url", "alb"])
def test_each_lambda_event_format(handler, fluxbase_post, fmt):
    response = fluxbase_post(handler, lambda_format=fmt)
    assert (response.status, response.json) == (200, {"ok": True})
    event, context = SEEN[0]
    assert context.get_remaining_time_in_millis() > 0
    if fmt == "alb":
        assert "elb" in event["requestContext"] and event["httpMethod"] == "POST"
        assert event["headers"]["user-agent"] == "Fluxbase-Webhooks/1.0"
    elif fmt == "v1":
        assert event["httpMethod"] == "POST" and event["path"] == "/webhooks/fluxbase"
        assert event["headers"]["User-Agent"] == "Fluxbase-Webhooks/1.0"
    else:
        assert event["version"] == "2.0" and event["rawPath"] == "/webhooks/fluxbase"
        assert event["headers"]["user-agent"] == "Fluxbase-Webhooks/1.0"
        assert event["routeKey"] == ("$default" if fmt == "url" else "POST /webhooks/fluxbase")


def test_a_body_that_is_not_utf8_is_base64_encoded(handler, fluxbase_post):
    response = fluxbase_post(handler, b"\\xff\\xfe", path="/hooks")
    assert (response.status, response.json["error"]) == (400, "invalid_payload")
    event, _ = SEEN[0]
    assert event["isBase64Encoded"] and event["rawPath"] == "/hooks"
"""


def test_posting_to_a_lambda_handler_builds_each_event_format(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=LAMBDA_TESTS)
    pytester.runpytest("-q").assert_outcomes(passed=5)


def test_the_strategies_drive_a_users_property_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import dataclasses

        from hypothesis import given, settings

        from fluxbase_receiver import Receiver
        from fluxbase_receiver.testing import strategies as fst


        @settings(max_examples=25)
        @given(fst.signed_requests(fst.events("UPDATE")))
        def test_every_update_is_accepted(request):
            receiver = Receiver(request.secret, clock=lambda: request.timestamp)
            seen = []
            receiver.on("*", "UPDATE")(seen.append)
            assert receiver.handle(request.body, request.headers).status == 200
            assert [event.event for event in seen] == ["UPDATE"]
            assert seen[0].record == request.payload["record"]
            bare = dataclasses.replace(request, body=b"", headers={}, payload=None)
            assert "secret=" not in repr(bare)  # the secret is never in the repr
        """
    )
    pytester.runpytest("-q").assert_outcomes(passed=1)
