"""`batch-export` run as a person runs it: a subprocess with the service's environment, in a folder of its own."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cli"]


@dataclass
class Terminal:
    """Runs `batch-export` as a person does: a subprocess with the service's environment, in a folder of its own."""

    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True, env={**self.env, **env}, cwd=self.cwd, timeout=90
        )

    def start(self, *args: str, **popen) -> subprocess.Popen:
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([*CLI, *args], env=self.env, cwd=self.cwd, text=True, **popen)

    def worker(self, **env: str) -> None:
        """`batch-export worker --burst`, as operators run it: it takes what is queued, runs it, exits."""
        # The worker's sweep would also pick up the QUEUED exports other tests left without a job; a long
        # grace period keeps this worker to the export of the test at hand.
        result = self.run("worker", "--burst", BATCH_EXPORT_SWEEP_GRACE_SECONDS="1000000000", **env)
        assert result.returncode == 0, result.stderr


def connection(api_url: str, token: str, project_id: str) -> list[str]:
    return ["--api", api_url, "--token", token, "--project", project_id]


def finish(process: subprocess.Popen, timeout: float = 90) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the CLI did not finish:\nstdout: {out}\nstderr: {err}")
    return process.returncode, out, err
