"""pytest fixtures for testing Fluxbase webhook handlers without a Fluxbase server.

Installed with the package (``pytest11`` entry point ``fluxbase_receiver``): the fixtures
below are available in every test with no import. The work is done by pytest-free
modules (:mod:`~fluxbase_receiver.testing.signing`, :mod:`~fluxbase_receiver.testing.posting`,
:mod:`~fluxbase_receiver.testing.recorder`, :mod:`~fluxbase_receiver.testing.lambda_events`).

``fluxbase_secret``
    A fresh random webhook secret.
``fluxbase_event``
    The event factory :func:`~fluxbase_receiver.testing.make_event`.
``fluxbase_signer``
    ``fluxbase_signer(event) -> (body, headers)`` exactly as a Fluxbase server sends them.
``fluxbase_post``
    ``fluxbase_post(target, event) -> WebhookResponse``: signs and posts to any ASGI or
    WSGI app (our middlewares included), a Flask, Starlette or Django test client, or an
    AWS Lambda handler.
``fluxbase_use_secret``
    ``fluxbase_use_secret(receiver)`` makes an existing :class:`~fluxbase_receiver.Receiver`
    (built when the app module was imported) verify with ``fluxbase_secret`` for the test.
``fluxbase_recorder``
    Records which handlers of a :class:`~fluxbase_receiver.Receiver` ran with which events.

This module imports only pytest, the standard library and the core; web frameworks are
used only when a target of theirs is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxbase_receiver.receiver import Receiver
from fluxbase_receiver.testing import make_event, random_secret
from fluxbase_receiver.testing.posting import Poster, WebhookResponse
from fluxbase_receiver.testing.recorder import HandlerCall, Recorder
from fluxbase_receiver.testing.signing import Signer, use_secret

__all__ = ["HandlerCall", "Poster", "Recorder", "Signer", "WebhookResponse"]


@pytest.fixture
def fluxbase_secret() -> str:
    """A fresh random webhook secret."""
    return random_secret()


@pytest.fixture
def fluxbase_event() -> Callable[..., dict[str, Any]]:
    """The event factory: ``fluxbase_event("UPDATE", table="orders", record={...})``."""
    return make_event


@pytest.fixture
def fluxbase_signer(fluxbase_secret: str) -> Signer:
    """``fluxbase_signer(event, **options) -> (body, headers)``, signed with ``fluxbase_secret``."""
    return Signer(fluxbase_secret)


@pytest.fixture
def fluxbase_post(fluxbase_signer: Signer) -> Poster:
    """``fluxbase_post(target, event, **options) -> WebhookResponse``: sign, post, answer."""
    return Poster(fluxbase_signer)


@pytest.fixture
def fluxbase_use_secret(fluxbase_secret: str) -> Iterator[Callable[[Receiver], Receiver]]:
    """``fluxbase_use_secret(receiver) -> receiver``: verify with ``fluxbase_secret`` until
    the test ends, then with the receiver's own secrets again."""
    restores: list[Callable[[], None]] = []

    def use(receiver: Receiver) -> Receiver:
        restores.append(use_secret(receiver, fluxbase_secret))
        return receiver

    yield use
    for restore in reversed(restores):
        restore()


@pytest.fixture
def fluxbase_recorder() -> Iterator[Recorder]:
    """A :class:`Recorder`; ``fluxbase_recorder.watch(receiver)`` records its handlers."""
    recorder = Recorder()
    yield recorder
    recorder.restore()
