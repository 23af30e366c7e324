"""Bad command invocations: each one is a non-zero exit and one error line, never a traceback."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fluxbase_receiver import sign_payload
from tests.cli.commands import COMMAND, assert_one_line_error, cli, environment
from tests.servers import bound_socket, free_port

Ran = subprocess.CompletedProcess[str]
CLOSED = "http://127.0.0.1:9/"
"""The discard port: nothing listens there, and nothing here gets as far as connecting."""
NOT_UTF8 = b"\xff\xfe"
DEEP = "[" * 100_000


@dataclass(frozen=True)
class Bad:
    """One bad invocation: its arguments (``{dir}`` is a scratch folder) and what the error says."""

    name: str
    args: tuple[str | bytes, ...]
    expected: str
    env: dict[str, str | bytes] = field(default_factory=dict)
    stdin: bytes = b""


def send(*args: str | bytes) -> tuple[str | bytes, ...]:
    return ("send", CLOSED, "--secret", "s", *args)


def signed(body: bytes) -> str:
    return sign_payload(body, "s", timestamp=1_700_000_000)


BAD = [
    # no command, unknown command or option
    Bad("no-command", (), "COMMAND"),
    Bad("unknown-command", ("bogus",), "invalid choice"),
    Bad("sender-without-action", ("sender",), "required"),
    Bad("sender-unknown-action", ("sender", "bogus"), "invalid choice"),
    Bad("unknown-option", ("sign", "--secret", "s", "--bogus"), "unrecognized arguments"),
    Bad("extra-argument", ("sign", "--secret", "s", "a.json", "b.json"), "unrecognized"),
    # secrets
    Bad("sign-no-secret", ("sign",), "no webhook secret"),
    Bad("sign-empty-secret", ("sign", "--secret", ""), "no webhook secret"),
    Bad("empty-secret-in-rotation", ("sign", "--secret", "s", "--secret", ""), "no webhook secret"),
    Bad("sign-non-utf8-secret", ("sign", "--secret", NOT_UTF8), "not valid UTF-8"),
    Bad("verify-non-utf8-secret", ("verify", "--secret", NOT_UTF8, "--signature", "x"), "UTF-8"),
    Bad("env-non-utf8-secret", ("sign",), "not valid UTF-8", {"FLUXBASE_WEBHOOK_SECRET": NOT_UTF8}),
    Bad("listen-no-secret", ("listen", "--port", "0"), "no webhook secret"),
    Bad("listen-empty-secret", ("listen", "--secret", "", "--port", "0"), "no webhook secret"),
    # files
    Bad("missing-file", ("sign", "--secret", "s", "/nonexistent/body.json"), "cannot read"),
    Bad("directory", ("sign", "--secret", "s", "{dir}"), "cannot read"),
    Bad("unreadable-file", ("sign", "--secret", "s", "/proc/self/mem"), "cannot read"),
    Bad(
        "broken-symlink", ("verify", "--secret", "s", "--signature", "x", "{dir}/dangling"), "read"
    ),
    Bad("sign-bad-timestamp", ("sign", "--secret", "s", "--timestamp", "soon"), "invalid int"),
    # verify
    Bad("verify-no-signature", ("verify", "--secret", "s"), "--signature"),
    Bad(
        "verify-tolerance-word",
        ("verify", "--secret", "s", "--signature", "x", "--tolerance", "x"),
        "tolerance",
    ),
    Bad(
        "verify-tolerance-negative",
        ("verify", "--secret", "s", "--signature", "x", "--tolerance", "-1"),
        "zero or more",
    ),
    Bad(
        "verify-tolerance-nan",
        ("verify", "--secret", "s", "--signature", "x", "--tolerance", "nan"),
        "zero or more",
    ),
    Bad(
        "verify-malformed-signature",
        ("verify", "--secret", "s", "--signature", "v1=abc"),
        "malformed_signature",
        stdin=b"{}",
    ),
    Bad(
        "verify-non-utf8-signature",
        ("verify", "--secret", "s", "--signature", b"t=1,v1=\xff"),
        "UTF-8",
        stdin=b"{}",
    ),
    Bad(
        "verify-legacy-not-hex",
        ("verify", "--secret", "s", "--legacy", "--signature", "zz"),
        "invalid_signature",
        stdin=b"{}",
    ),
    Bad(
        "verify-stale",
        ("verify", "--secret", "s", "--signature", signed(b"{}")),
        "timestamp_outside_tolerance",
        stdin=b"{}",
    ),
    Bad(
        "verify-signed-not-json",
        ("verify", "--secret", "s", "--tolerance", "off", "--signature", signed(b"{oops")),
        "invalid_payload",
        stdin=b"{oops",
    ),
    Bad(
        "verify-signed-deep-json",
        ("verify", "--secret", "s", "--tolerance", "off", "--signature", signed(DEEP.encode())),
        "invalid_payload",
        stdin=DEEP.encode(),
    ),
    Bad(
        "verify-signed-binary",
        ("verify", "--secret", "s", "--tolerance", "off", "--signature", signed(NOT_UTF8)),
        "invalid_payload",
        stdin=NOT_UTF8,
    ),
    # send: URLs
    Bad("send-no-url", ("send", "--secret", "s"), "URL"),
    Bad("send-ftp-url", ("send", "ftp://127.0.0.1/", "--secret", "s"), "http:// or https://"),
    Bad("send-unclosed-ipv6", ("send", "http://[::1", "--secret", "s"), "bad URL"),
    Bad("send-non-numeric-port", ("send", "http://127.0.0.1:abc/", "--secret", "s"), "bad URL"),
    Bad("send-port-out-of-range", ("send", "http://127.0.0.1:99999/", "--secret", "s"), "bad URL"),
    Bad("send-no-host", ("send", "http:///hooks", "--secret", "s"), "no host"),
    Bad("send-space-in-url", ("send", "http://127.0.0.1:9/a b", "--secret", "s"), "bad URL"),
    Bad("send-non-utf8-url", ("send", b"http://127.0.0.1:9/\xff", "--secret", "s"), "UTF-8"),
    Bad(
        "send-closed-port", ("send", "http://127.0.0.1:{closed}/", "--secret", "s"), "cannot reach"
    ),
    # send: options
    Bad("send-timeout-negative", send("--timeout", "-1"), "positive number of seconds"),
    Bad("send-timeout-nan", send("--timeout", "nan"), "positive number of seconds"),
    Bad("send-timeout-inf", send("--timeout", "inf"), "positive number of seconds"),
    Bad("send-timeout-zero", send("--timeout", "0"), "positive number of seconds"),
    Bad("send-timeout-word", send("--timeout", "soon"), "positive number of seconds"),
    Bad("send-header-not-latin1", send("--header", "X-Note: ☃"), "Latin-1"),
    Bad("send-header-bad-name", send("--header", "Bad Name: v"), "header name"),
    Bad("send-header-no-colon", send("--header", "nocolon"), "Name: value"),
    Bad("send-header-newline", send("--header", "X-A: a\r\nX-B: b"), "Name: value"),
    Bad("send-header-control-char", send("--header", "X-A: a\x01b"), "control character"),
    Bad("send-record-not-json", send("--record", "{oops"), "not valid JSON"),
    Bad("send-record-not-object", send("--record", "[1]"), "JSON object"),
    Bad("send-record-null", send("--old-record", "null"), "JSON object"),
    Bad("send-record-nan", send("--record", '{"price": NaN}'), "not valid JSON"),
    Bad("send-record-too-deep", send("--record", '{"a": ' + DEEP), "nested too deeply"),
    Bad("send-bad-event", send("--event", "MERGE"), "invalid choice"),
    Bad("send-non-utf8-table", send("--table", NOT_UTF8), "UTF-8"),
    Bad("send-non-utf8-webhook-id", send("--webhook-id", NOT_UTF8), "UTF-8"),
    Bad("send-non-utf8-header", send("--header", b"X-A: \xff"), "UTF-8"),
    # listen
    Bad("listen-port-word", ("listen", "--secret", "s", "--port", "http"), "port"),
    Bad("listen-port-too-big", ("listen", "--secret", "s", "--port", "99999"), "0-65535"),
    Bad("listen-port-negative", ("listen", "--secret", "s", "--port", "-1"), "0-65535"),
    Bad("listen-busy-port", ("listen", "--secret", "s", "--port", "{busy}"), "cannot listen on"),
    Bad(
        "listen-forward-ftp",
        ("listen", "--secret", "s", "--forward-to", "ftp://127.0.0.1/"),
        "http://",
    ),
    Bad(
        "listen-forward-bad-url",
        ("listen", "--secret", "s", "--forward-to", "http://[::1"),
        "bad URL",
    ),
    Bad(
        "listen-tolerance-negative",
        ("listen", "--secret", "s", "--tolerance", "-5"),
        "zero or more",
    ),
    Bad("listen-non-utf8-host", ("listen", "--secret", "s", "--host", NOT_UTF8), "UTF-8"),
]


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, subprocess.CompletedProcess[str]]]:
    """Every bad invocation, run a few at a time (each is a fresh interpreter)."""
    scratch = tmp_path_factory.mktemp("bad")
    (scratch / "dangling").symlink_to(scratch / "gone")
    with bound_socket() as busy:
        busy.listen()
        values = {
            "dir": str(scratch),
            "closed": str(free_port()),
            "busy": str(busy.getsockname()[1]),
        }

        def fill(arg: str | bytes) -> str | bytes:
            if isinstance(arg, str):
                for name, value in values.items():
                    arg = arg.replace("{" + name + "}", value)
            return arg

        def run(case: Bad) -> subprocess.CompletedProcess[str]:
            args = [fill(arg) for arg in case.args]
            return cli(*args, stdin=case.stdin, env=environment(**case.env), timeout=30)

        with ThreadPoolExecutor(4) as pool:
            yield dict(zip([case.name for case in BAD], pool.map(run, BAD), strict=True))


def test_the_table_is_large_and_its_names_unique() -> None:
    assert len(BAD) >= 40
    assert len({case.name for case in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=[case.name for case in BAD])
def test_bad_invocation_is_one_line_and_a_non_zero_exit(
    case: Bad, results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = results[case.name]
    assert_one_line_error(result, case.expected)
    assert "s3cr3t" not in result.stderr


# -- signals and closed pipes ------------------------------------------------------------


def interrupted(args: list[str], blocked: Callable[[subprocess.Popen[bytes]], None]) -> Ran:
    """Start the command, wait until ``blocked`` says it waits, then send it Ctrl-C."""
    process = subprocess.Popen(
        [*COMMAND, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    try:
        blocked(process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    return Ran(
        process.args, process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


def reading_stdin(process: subprocess.Popen[bytes]) -> None:
    """Wait until ``process`` sleeps in a read of its stdin pipe."""
    wchan = Path(f"/proc/{process.pid}/wchan")
    deadline = time.monotonic() + 30
    while "pipe_read" not in wchan.read_text():
        assert time.monotonic() < deadline, "the command never read its stdin"
        time.sleep(0.02)


def test_ctrl_c_while_reading_stdin_is_one_line() -> None:
    result = interrupted(["sign", "--secret", "s"], reading_stdin)
    assert_one_line_error(result, "interrupted")
    assert result.returncode == 130


def test_ctrl_c_while_waiting_for_an_answer_is_one_line() -> None:
    with bound_socket() as silent:
        silent.listen()
        silent.settimeout(30)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        connections: list[socket.socket] = []

        def connected(process: subprocess.Popen[bytes]) -> None:
            connections.append(silent.accept()[0])  # the command is now waiting for an answer

        result = interrupted(["send", url, "--secret", "s"], connected)
        for conn in connections:
            conn.close()
    assert_one_line_error(result, "interrupted")
    assert result.returncode == 130


def test_a_timeout_is_one_line() -> None:
    with bound_socket() as silent:
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        result = cli("send", url, "--secret", "s", "--timeout", "0.5")
    assert_one_line_error(result, "timed out")


@pytest.mark.parametrize("command", ["sign", "verify"])
def test_a_reader_that_goes_away_is_no_traceback(command: str, tmp_path: Path) -> None:
    body = json.dumps({"event": "TEST", "table": "test", "record": {"x": "y" * 200_000}}).encode()
    (tmp_path / "event.json").write_bytes(body)
    header = sign_payload(body, "s")
    script = (
        f"{' '.join(COMMAND)} {command} --secret s --signature '{header}' event.json | head -c 1"
        if command == "verify"
        else f"{' '.join(COMMAND)} sign --secret s event.json | head -c 1"
    )
    result = subprocess.run(
        ["sh", "-c", script], cwd=tmp_path, capture_output=True, env=environment(), timeout=60
    )
    assert len(result.stdout) == 1
    assert b"Traceback" not in result.stderr
    assert result.stderr == b""


def test_a_closed_connection_after_the_request_is_one_line() -> None:
    with bound_socket() as rude:
        rude.listen()
        url = f"http://127.0.0.1:{rude.getsockname()[1]}/"
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(cli, "send", url, "--secret", "s")
            conn, _ = rude.accept()
            conn.recv(65_536)
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()
            result = sent.result(timeout=60)
    assert_one_line_error(result, "cannot reach")
