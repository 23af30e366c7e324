"""``--version``, ``lambda-event``, the ``sender`` commands' argument checks, the documented
``sign``/``verify`` round trip, escaping what ``listen`` prints, and stopping ``listen``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fluxbase_receiver import Receiver, __version__
from fluxbase_receiver.adapters.aws_lambda import lambda_handler
from fluxbase_receiver.testing import LambdaContext
from tests.cli.commands import Live, assert_one_line_error, cli, environment
from tests.servers import free_port, wait_for_port


def test_version() -> None:
    result = cli("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"fluxbase-receiver {__version__}")


@pytest.mark.parametrize("fmt", ["v2", "v1", "url", "alb"])
def test_lambda_event_prints_an_event_the_lambda_adapter_accepts(fmt: str) -> None:
    result = cli(
        "lambda-event", "--secret", "s3cr3t", "--format", fmt, "--table", "orders",
        "--record", '{"id": 5}', "--path", "/hook",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    seen = []
    receiver = Receiver("s3cr3t")
    receiver.on("orders")(seen.append)
    answer = lambda_handler(receiver)(event, LambdaContext())
    assert answer["statusCode"] == 200, answer
    assert [(e.event, e.qualified_table, e.record) for e in seen] == [
        ("INSERT", "public.orders", {"id": 5})
    ]


def test_lambda_event_checks_its_arguments() -> None:
    assert_one_line_error(cli("lambda-event", "--secret", "s", "--format", "v3"), "--format")
    assert_one_line_error(cli("lambda-event"), "no webhook secret")


def test_the_documented_sign_and_verify_round_trip(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text('{"event":"INSERT","table":"users","schema":"public","record":{"id":1}}')
    signed = cli("sign", "--secret", "s3cr3t", str(event))
    assert signed.returncode == 0, signed.stderr
    signature = signed.stdout.strip()
    checked = cli("verify", "--secret", "s3cr3t", "--signature", signature, str(event))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["record"] == {"id": 1}
    shell = subprocess.run(
        'fluxbase-receiver verify --secret s3cr3t --signature '
        '"$(fluxbase-receiver sign --secret s3cr3t event.json)" event.json',
        shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**environment(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )  # fmt: skip
    assert shell.returncode == 0, shell.stderr


SENDER_MISTAKES = [
    (["serve", "--port", "99999"], "a port is a number 0-65535"),
    (["serve", "--port", "-1"], "a port is a number 0-65535"),
    (["serve", "--cors-origin", "https://a.example/path"], "an origin is"),
    (["serve", "--host", b"\xff"], "not valid UTF-8"),
    (["worker", "--concurrency", "0"], "--concurrency"),
    (["worker", "--poll-interval", "-1"], "--poll-interval"),
    (["worker", "--progress-interval", "nan"], "--progress-interval"),
    (["worker", "--lease-grace", "inf"], "--lease-grace"),
    (["deliveries", "hook", "--limit", "0"], "--limit"),
    (["recover", "--since", "yesterday"], "ISO 8601"),
    (["recover", "--since", "nan"], "not a time"),
    (["redeliver"], "DELIVERY_ID"),
    (["nope"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "expected"), SENDER_MISTAKES, ids=str)
def test_every_sender_command_checks_its_arguments(
    argv: list[str | bytes], expected: str, tmp_path: Path
) -> None:
    database = ["--database-url", f"sqlite:///{tmp_path}/app.db"]
    result = cli("sender", *argv, *(database if argv != ["nope"] else []), timeout=30)
    assert_one_line_error(result, expected)
    assert result.returncode == 2
    assert not (tmp_path / "app.db").exists()


def test_a_database_out_of_reach_is_one_line(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path}/missing-directory/app.db"
    result = cli("sender", "recover", "--since", "0", "--database-url", database)
    assert_one_line_error(result, "error")
    assert result.returncode == 1


def test_listen_escapes_control_characters_from_the_network() -> None:
    port = free_port()
    live = Live(["--secret", "s3cr3t", "--port", str(port)])
    try:
        live.wait_for("listening on")
        url = f"http://127.0.0.1:{port}/"
        table = "orders\x1b[2J\x1b]0;owned\x07\u202e"
        record = json.dumps({"note": "\x1b[31mred\x9b", "id": 1})
        sent = cli("send", url, "--secret", "s3cr3t", "--table", table, "--record", record)
        assert sent.returncode == 0, sent.stderr
        line = live.wait_for("INSERT")
        assert "public.orders\\x1b[2J\\x1b]0;owned\\x07\\u202e" in line
        detail = " ".join(live.drain())
        assert "\\u001b[31mred\\x9b" in detail
        assert not any(c in line + detail for c in "\x1b\x07\x9b\u202e")
    finally:
        live.kill()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_listen_stops_with_status_0_as_soon_as_it_says_it_listens(signum: int) -> None:
    for _ in range(5):
        live = Live(["--secret", "s", "--port", "0"])
        try:
            live.wait_for("Ctrl-C")
            live.process.send_signal(signum)
            assert live.process.wait(timeout=20) == 0
            assert live.process.stderr is not None and live.process.stderr.read() == ""
            assert "stopped" in live.drain()
        finally:
            live.kill()


def test_listen_serves_after_its_banner() -> None:
    port = free_port()
    live = Live(["--secret", "s", "--port", str(port)])
    try:
        live.wait_for("Ctrl-C")
        wait_for_port(port)
        assert cli("send", f"http://127.0.0.1:{port}/", "--secret", "s").returncode == 0
    finally:
        live.kill()


def test_the_plain_commands_import_no_sender_part() -> None:
    code = (
        "import sys\n"
        "from fluxbase_receiver.cli import main\n"
        "main(['sign', '--secret', 's', '-'])\n"
        "import fluxbase_receiver.cli.send, fluxbase_receiver.cli.listen\n"
        "import fluxbase_receiver.cli.verify, fluxbase_receiver.cli.lambda_event\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('aiohttp', 'uvicorn', 'starlette', 'pytest', 'httpx')"
        " or m.startswith('fluxbase_receiver.sender')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], input="{}", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_listen_stops_while_a_slow_client_keeps_sending() -> None:
    port = free_port()
    live = Live(["--secret", "s", "--port", str(port)])
    sending, done = threading.Event(), threading.Event()

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /webhooks/fluxbase HTTP/1.1\r\n")
            while not done.wait(0.2):  # a header byte at a time, for as long as it is let
                try:
                    sock.sendall(b"X")
                except OSError:
                    return
                sending.set()

    try:
        live.wait_for("Ctrl-C")
        wait_for_port(port)
        slow = threading.Thread(target=trickle, daemon=True)
        slow.start()
        assert sending.wait(20)
        live.process.send_signal(signal.SIGINT)
        assert live.process.wait(timeout=30) == 0
    finally:
        done.set()
        live.kill()
