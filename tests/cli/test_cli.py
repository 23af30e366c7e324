"""The ``fluxbase-receiver`` command, run as subprocesses over loopback."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxbase_receiver.cli.http_client import ANSWER_LIMIT
from tests.cli.commands import COMMAND, Live, assert_one_line_error, cli, environment
from tests.servers import bound_socket, free_port, load_vectors, wait_for_port

VECTORS = load_vectors()
IDS = [case["name"] for case in VECTORS]
SCRIPT = Path(sys.executable).parent / "fluxbase-receiver"


@pytest.fixture
def listener() -> Iterator[tuple[Live, str]]:
    port = free_port()
    live = Live(["--secret", "s3cr3t", "--port", str(port)])
    try:
        live.wait_for("listening on")
        yield live, f"http://127.0.0.1:{port}/webhooks/fluxbase"
    finally:
        live.kill()


# -- sign / verify --------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_sign_piped_into_verify_round_trips_every_vector(case: dict[str, Any]) -> None:
    body = case["body"].encode("utf-8")
    signed = cli(
        "sign", "--secret", case["secret"], "--timestamp", str(case["timestamp"]), stdin=body
    )
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.strip() == case["header"]

    header = signed.stdout.strip()
    verified = cli(
        "verify",
        "--secret",
        case["secret"],
        "--signature",
        header,
        "--tolerance",
        "off",
        stdin=body,
    )
    assert verified.returncode == 0, verified.stderr
    printed = json.loads(verified.stdout)
    sent = json.loads(body)
    assert (printed["event"], printed["table"], printed["record"]) == (
        sent["event"],
        sent["table"],
        sent["record"],
    )


@pytest.mark.parametrize("case", VECTORS, ids=IDS)
def test_verify_accepts_every_legacy_vector(case: dict[str, Any]) -> None:
    body = case["body"].encode("utf-8")
    args = ["--secret", case["secret"], "--signature", case["legacy_signature"], "--legacy"]
    assert cli("verify", *args, stdin=body).returncode == 0


def test_a_shell_pipeline_of_the_console_script_verifies_with_the_current_time(
    tmp_path: Path,
) -> None:
    body = tmp_path / "event.json"
    body.write_bytes(VECTORS[1]["body"].encode("utf-8"))
    script = f'"{SCRIPT}" verify --signature "$("{SCRIPT}" sign event.json)" event.json'
    result = subprocess.run(
        ["sh", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environment(FLUXBASE_WEBHOOK_SECRET="from-the-environment"),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["event"] == "UPDATE"


def test_verify_failures_exit_1_with_the_reason() -> None:
    case = VECTORS[0]
    body = case["body"].encode("utf-8")
    tampered = body.replace(b"user@", b"evil@")
    secret = ["--secret", case["secret"]]
    off = ["--tolerance", "off"]
    failures = {
        "invalid_signature": cli(
            "verify", *secret, "--signature", case["header"], *off, stdin=tampered
        ),
        "timestamp_outside_tolerance": cli(
            "verify", *secret, "--signature", case["header"], stdin=body
        ),
        "malformed_signature": cli("verify", *secret, "--signature", "v1=abc", stdin=body),
        "invalid_signature ": cli(
            "verify", "--secret", "other", "--signature", case["header"], *off, stdin=body
        ),
    }
    for reason, result in failures.items():
        assert result.returncode == 1
        assert_one_line_error(result, reason.strip())
        assert result.stdout == ""
        assert case["secret"] not in result.stderr


def test_verify_refuses_a_correctly_signed_body_that_is_not_an_event() -> None:
    body = b'{"hello": "world"}'
    header = cli("sign", "--secret", "s", stdin=body).stdout.strip()
    result = cli("verify", "--secret", "s", "--signature", header, stdin=body)
    assert result.returncode == 1
    assert_one_line_error(result, "invalid_payload")


@pytest.mark.parametrize("command", ["sign", "verify", "send", "listen", "demo"])
def test_every_subcommand_help_has_an_example(command: str) -> None:
    result = cli(command, "--help") if command != "demo" else cli("--help")
    assert result.returncode == 0
    assert "example" in result.stdout.lower()
    assert command in result.stdout


def test_send_to_a_closed_port_is_one_line() -> None:
    result = cli("send", f"http://127.0.0.1:{free_port()}/", "--secret", "s")
    assert result.returncode == 1
    assert_one_line_error(result, "cannot reach")


def test_send_prints_only_the_start_of_a_100_mb_answer() -> None:
    size = 100 * 1024 * 1024

    def answer_huge(server: socket.socket) -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as request:
            length = 0
            while line := request.readline().strip():
                name, _, value = line.partition(b":")
                length = int(value) if name.lower() == b"content-length" else length
            request.read(length)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            chunk = b"x" * 1_048_576
            with contextlib.suppress(OSError):  # the command stops reading
                for _ in range(size // len(chunk)):
                    conn.sendall(chunk)

    with bound_socket() as server:
        server.listen()
        thread = threading.Thread(target=answer_huge, args=(server,), daemon=True)
        thread.start()
        result = cli("send", f"http://127.0.0.1:{server.getsockname()[1]}/", "--secret", "s")
        thread.join(timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("200 OK\n")
    assert len(result.stdout) <= ANSWER_LIMIT + 100
    note = f"the answer is longer than {ANSWER_LIMIT} bytes; only the start is shown"
    assert result.stderr.strip().splitlines() == [f"fluxbase-receiver: {note}"]


def test_listen_on_a_busy_port_is_one_line() -> None:
    with bound_socket() as sock:
        sock.listen()
        port = sock.getsockname()[1]
        result = cli("listen", "--secret", "s", "--port", str(port))
    assert_one_line_error(result, "cannot listen on 127.0.0.1")


def test_demo_runs_the_sender_demo() -> None:
    result = cli("demo", "--help")
    assert result.returncode == 0, result.stderr
    assert "--database" in result.stdout


@pytest.mark.parametrize("blocked", ["aiohttp", "uvicorn"])
def test_demo_without_the_sender_extra_says_what_to_install(blocked: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from fluxbase_receiver.cli import main\n"
        "sys.exit(main(['demo']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment()
    )
    assert_one_line_error(result, "pip install")
    assert "fluxbase-receiver[sender]" in result.stderr


# -- send and listen ------------------------------------------------------------------


def test_send_to_listen_shows_the_event_then_dedupes_it(listener: tuple[Live, str]) -> None:
    live, url = listener
    record = '{"id": 42, "status": "shipped", "note": "café ☃"}'
    old = '{"id": 42, "status": "paid", "note": "café ☃"}'
    args = ["--event", "UPDATE", "--table", "orders", "--record", record, "--old-record", old]
    args += ["--header", "X-Fluxbase-Event-Id: evt-42"]  # an id: the redelivery is a duplicate
    sent = cli(
        "send",
        url,
        *args,
        "--webhook-id",
        "wh-1",
        env=environment(FLUXBASE_WEBHOOK_SECRET="s3cr3t"),
    )
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines()[0] == "200 OK"
    assert json.loads(sent.stdout.split("\n", 1)[1]) == {"ok": True}

    assert "UPDATE public.orders" in live.wait_for("UPDATE")
    assert live.wait_for("webhook_id").strip() == "webhook_id: wh-1"
    assert live.wait_for("status:").strip() == 'status: "paid" -> "shipped"'
    live.wait_for('"note": "café ☃"')

    again = cli("send", url, "--secret", "s3cr3t", *args, "--webhook-id", "wh-1")
    assert again.returncode == 0
    assert json.loads(again.stdout.split("\n", 1)[1]) == {"ok": True, "duplicate": True}
    assert "duplicate" in live.wait_for("UPDATE")

    code, stderr = live.interrupt()
    assert code == 0
    assert "Traceback" not in stderr
    assert not any("\033[" in line for line in live.seen)


def test_listen_refuses_and_reports_a_wrong_secret(listener: tuple[Live, str]) -> None:
    live, url = listener
    result = cli("send", url, "--secret", "not-the-secret", "--event", "INSERT")
    assert result.returncode == 1
    assert result.stdout.startswith("401 ")
    assert "invalid_signature" in live.wait_for("refused")
    assert "not-the-secret" not in "\n".join(live.seen)


def test_listen_answers_405_to_a_get(listener: tuple[Live, str]) -> None:
    import urllib.error
    import urllib.request

    live, url = listener
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(url, timeout=10)
    assert answer.value.code == 405
    assert "method_not_allowed" in live.wait_for("405")


def test_ctrl_c_stops_listen_with_status_0() -> None:
    port = free_port()
    live = Live(["--secret", "s", "--port", str(port)])
    live.wait_for("Ctrl-C")
    wait_for_port(port)
    code, stderr = live.interrupt()
    assert code == 0
    assert stderr == ""


def test_listen_forwards_verified_events_to_the_local_app(listener: tuple[Live, str]) -> None:
    app, app_url = listener
    port = free_port()
    proxy = Live(["--secret", "s3cr3t", "--port", str(port), "--forward-to", app_url])
    try:
        proxy.wait_for("forwarding verified events to")
        url = f"http://127.0.0.1:{port}/"
        args = ["--secret", "s3cr3t", "--record", '{"id": 7}', "--webhook-id", "wh-7"]
        args += ["--header", "X-Fluxbase-Event-Id: evt-7"]
        sent = cli("send", url, *args)
        assert sent.returncode == 0, sent.stderr
        assert "INSERT public.users" in app.wait_for("INSERT")
        assert "INSERT public.users" in proxy.wait_for("INSERT")

        again = cli("send", url, *args)
        assert '"duplicate": true' in again.stdout
        assert "duplicate" in proxy.wait_for("INSERT")

        refused = cli("send", url, "--secret", "wrong", "--record", '{"id": 8}')
        assert refused.returncode == 1
        assert "refused" in proxy.wait_for("401")
    finally:
        proxy.kill()


def test_a_failed_forward_is_a_502_and_the_retry_runs_again() -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    port = free_port()
    proxy = Live(["--secret", "s", "--port", str(port), "--forward-to", dead])
    try:
        proxy.wait_for("forwarding")
        url = f"http://127.0.0.1:{port}/"
        args = ["--secret", "s", "--record", '{"id": 1}', "--webhook-id", "wh-2"]
        for _ in range(2):
            result = cli("send", url, *args)
            assert result.returncode == 1
            assert result.stdout.startswith("502 ")
            assert "forward_failed" in result.stdout
            proxy.wait_for("502")
    finally:
        proxy.kill()


def test_the_apps_refusal_is_returned_and_the_retry_is_forwarded_again(
    listener: tuple[Live, str],
) -> None:
    app, app_url = listener
    port = free_port()
    proxy = Live(["--secret", "other-secret", "--port", str(port), "--forward-to", app_url])
    try:
        proxy.wait_for("forwarding")
        url = f"http://127.0.0.1:{port}/"
        args = ["--secret", "other-secret", "--record", '{"id": 3}', "--webhook-id", "wh-3"]
        for _ in range(2):
            result = cli("send", url, *args)
            assert result.stdout.startswith("401 ")
            assert "invalid_signature" in app.wait_for("refused")
            assert "invalid_signature" in proxy.wait_for("401")
    finally:
        proxy.kill()


@pytest.mark.parametrize("no_color", [None, "1"])
def test_colour_only_on_a_terminal_without_no_color(
    listener: tuple[Live, str], no_color: str | None
) -> None:
    _, url = listener
    env = environment(**({"NO_COLOR": no_color} if no_color else {}))
    primary, replica = pty.openpty()
    try:
        process = subprocess.Popen(
            [*COMMAND, "send", url, "--secret", "s3cr3t"], stdout=replica, env=env
        )
        assert process.wait(timeout=60) == 0
        output = os.read(primary, 65536).decode("utf-8")
    finally:
        os.close(primary)
        os.close(replica)
    assert ("\033[" in output) is (no_color is None)
    assert "200 OK" in output
