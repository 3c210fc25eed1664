"""The exports page's build and a worker process beside the browser tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


CHROMIUM = Path("/usr/bin/chromium")


# The flags; Playwright's own browsers are never downloaded.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def run(command: list[str | Path], cwd: Path = WEB_DIR, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@dataclass
class RunningWorker:
    process: subprocess.Popen
    log: Path

    def assert_alive(self) -> None:
        """A dead worker fails the test at once, with the reason from its log, not after a long wait."""
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"the export worker exited with {self.process.returncode}:\n{tail}")


# What the worker must share with the API under test: the database, the queue, the files and the link signing.
WORKER_SETTINGS = ("DATABASE_URL", "REDIS_URL", "EXPORT_STORAGE_URL", "PUBLIC_BASE_URL", "SECRET_KEY")
