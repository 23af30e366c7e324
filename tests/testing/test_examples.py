"""A new user's test file, using only the documented fixtures, passes against each example app."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RECORDED = """
@pytest.fixture
def handled(example, fluxbase_recorder):
    fluxbase_recorder.watch(example.receiver)
    return lambda: [event.event for event in fluxbase_recorder.events()]


def test_the_handlers_get_the_row(post, fluxbase_event, fluxbase_recorder, handled):
    post(fluxbase_event("INSERT", table="orders", record={"id": 7, "total": 19.99}))
    assert fluxbase_recorder.ran
    event = fluxbase_recorder.events()[0]
    assert (event.qualified_table, event.record) == ("public.orders", {"id": 7, "total": 19.99})
"""
"""The app's receiver has handlers: the recorder tells which ran with which events."""

LOGGED = """
KINDS = {"New record": "INSERT", "Record updated": "UPDATE", "Record deleted": "DELETE"}


@pytest.fixture
def handled(caplog):
    caplog.set_level("DEBUG", logger=MODULE)
    return lambda: [
        kind
        for record in caplog.records
        for prefix, kind in KINDS.items()
        if record.name == MODULE and record.getMessage().startswith(prefix)
    ]
"""
"""The route function is the handler (FastAPI dependency): what it logs tells what ran."""

TARGETS = {
    "flask_app": (
        "",
        ["app", "test_client"],
        'example.app if param == "app" else example.app.test_client()',
        RECORDED,
    ),
    "starlette_app": (
        "from starlette.testclient import TestClient",
        ["app", "test_client"],
        'example.app if param == "app" else TestClient(example.app)',
        RECORDED,
    ),
    "fastapi_app": (
        "from fastapi.testclient import TestClient",
        ["app", "test_client"],
        'example.app if param == "app" else TestClient(example.app)',
        LOGGED,
    ),
    "lambda_function": ("", ["v2", "v1", "url", "alb"], "example.handler", RECORDED),
}
"""Per example: imports, the kinds of target, how the user's test builds one, and how it
tells which handlers ran."""

USER_TESTS = """
import functools
import importlib
import sys

import pytest

{imports}

MODULE = "examples.{module}"


@pytest.fixture
def example(monkeypatch, fluxbase_secret):
    monkeypatch.setenv("FLUXBASE_WEBHOOK_SECRET", fluxbase_secret)
    sys.modules.pop(MODULE, None)
    return importlib.import_module(MODULE)


@pytest.fixture(params={params!r})
def post(request, example, fluxbase_post):
    param = request.param
    target = {target}
    if MODULE.endswith("lambda_function"):
        return functools.partial(fluxbase_post, target, lambda_format=param)
    return functools.partial(fluxbase_post, target)


@pytest.mark.parametrize("kind", ["INSERT", "UPDATE", "DELETE"])
def test_a_change_is_handled(post, fluxbase_event, handled, kind):
    response = post(fluxbase_event(kind, table="orders"))
    assert response.status == 200
    assert response.json["ok"] is True
    assert handled() == [kind]


def test_a_redelivery_is_acknowledged_and_not_handled_again(
    post, fluxbase_signer, fluxbase_event, handled
):
    event = fluxbase_event("UPDATE", table="orders", id="evt-1")  # an id: deduplicated
    first = post(request=fluxbase_signer(event))
    again = post(request=fluxbase_signer(event))
    assert (first.status, again.status) == (200, 200)
    assert again.json["duplicate"] is True
    assert handled() == ["UPDATE"]


@pytest.mark.parametrize(
    ("options", "status", "error"),
    [
        ({{"wrong_secret": True}}, 401, "invalid_signature"),
        ({{"skew": -3600}}, 401, "timestamp_outside_tolerance"),
        ({{"skew": 3600}}, 401, "timestamp_outside_tolerance"),
        ({{"legacy_only": True}}, 401, "missing_signature"),
    ],
)
def test_unverified_requests_are_refused(
    post, fluxbase_event, handled, options, status, error
):
    response = post(fluxbase_event("INSERT"), **options)
    assert (response.status, response.json["error"]) == (status, error)
    assert handled() == []


def test_a_signed_body_that_is_not_an_event_is_a_400(post, handled):
    response = post(b'{{"hello": "world"}}')
    assert (response.status, response.json["error"]) == (400, "invalid_payload")
    assert handled() == []


def test_a_rotated_secret_still_passes(post, fluxbase_event, fluxbase_secret):
    response = post(fluxbase_event("DELETE"), secret=["the-next-secret", fluxbase_secret])
    assert response.status == 200


def test_the_test_button_is_answered_without_running_the_change_handlers(
    post, fluxbase_event, handled
):
    response = post(fluxbase_event("TEST"))
    assert response.status == 200
    assert handled() == []
"""

PER_TARGET = 3 + 1 + 4 + 1 + 1 + 1
"""Tests per target in USER_TESTS (plus one in RECORDED)."""


@pytest.mark.parametrize("module", sorted(TARGETS))
def test_a_users_test_file_passes_against_the_example(
    pytester: pytest.Pytester, module: str
) -> None:
    imports, params, target, handled = TARGETS[module]
    pytester.syspathinsert(ROOT)
    pytester.makepyfile(
        test_webhooks=USER_TESTS.format(
            imports=imports, module=module, params=params, target=target
        )
        + handled
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    per_target = PER_TARGET + (handled is RECORDED)
    result.assert_outcomes(passed=per_target * len(params))
