"""Running the ``fluxbase-receiver`` command as a subprocess: one-shot runs and ``listen``."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

COMMAND = [sys.executable, "-m", "fluxbase_receiver.cli"]
ERROR_PREFIX = "fluxbase-receiver: error: "


def environment(**extra: str | bytes) -> dict[str, str | bytes]:
    """This process's environment without a webhook secret or ``NO_COLOR``, plus ``extra``."""
    env: dict[str, str | bytes] = {
        k: v for k, v in os.environ.items() if k not in ("FLUXBASE_WEBHOOK_SECRET", "NO_COLOR")
    }
    env.update(extra)
    return env


def cli(
    *args: str | bytes,
    stdin: bytes = b"",
    env: dict[str, str | bytes] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the command with ``args`` (bytes reach argv as they are); decoded output."""
    result = subprocess.run(
        [*COMMAND, *args],
        input=stdin,
        capture_output=True,
        env=env or environment(),
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """A non-zero exit, one ``fluxbase-receiver: error: ...`` line naming ``expected``."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX)
    assert expected in lines[0]


class Live:
    """A running ``listen`` process whose stdout lines are collected as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str | bytes] | None = None) -> None:
        self.process = subprocess.Popen(
            [*COMMAND, "listen", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env or environment(),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.process.stdout is not None
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 20) -> str:
        """The first line (not yet consumed) containing ``text``; earlier lines are kept."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; output so far: {self.seen}") from None
            self.seen.append(line)
            if text in line:
                return line

    def drain(self) -> list[str]:
        """Every line printed so far and not yet consumed."""
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return self.seen

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C the process; its exit status and everything it wrote to stderr."""
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=20)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
