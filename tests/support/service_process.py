"""One process of the clinic as deployed (a web app under gunicorn, or a worker), started by a test:
in a process group of its own, so that stopping it stops gunicorn's workers too, and with its output
appended to one log across restarts, for the test to read or to print when it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from clinic.localservers import stop_process_group

LOG_TAIL_LINES = 40


class ServiceProcess:
    def __init__(self, name: str, command: list[str], env: dict, log_path: Path):
        self.name, self.command, self.env, self.log_path = name, command, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def exit_within(self, seconds: float, since: float) -> tuple[int, float] | None:
        """(exit status, seconds from `since` until it exited), or None if it is still running `seconds`
        from now."""
        try:
            status = self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None
        return status, time.monotonic() - since

    def kill(self) -> None:
        """SIGKILL to the whole group: no chance to ack, commit or close anything."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; the exit code (negative, the signal, if it had to be killed)."""
        if self.process is None:
            return 0
        stop_process_group(self.process)
        return self.process.returncode

    def output(self) -> str:
        """All it logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.output().splitlines()[-lines:])
