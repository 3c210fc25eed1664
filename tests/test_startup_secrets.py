"""`batch-export serve` and `worker` and the development SECRET_KEY: refused in production, loudly warned about elsewhere."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from devstack.servers import free_port
from schemas.settings import INSECURE_DEV_ENCRYPTION_KEY, INSECURE_DEV_SECRET

REPO = Path(__file__).resolve().parents[1]


def _env(**values: str) -> dict[str, str]:
    """The caller's environment without any secret or ENVIRONMENT of its own, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "SECRETS_ENCRYPTION_KEY", "ENVIRONMENT")}
    # Nothing listens there: a worker that gets as far as Redis waits for it, which is all these tests need.
    env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return {**env, "PYTHONPATH": str(REPO), **values}


def _command(name: str) -> list[str]:
    return [name, "--port", str(free_port())] if name == "serve" else [name]


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("secret", [None, INSECURE_DEV_SECRET])
def test_production_refuses_the_development_secret_in_one_line(tmp_path, command, secret):
    env = _env(ENVIRONMENT="production", **({"SECRET_KEY": secret} if secret else {}))
    result = subprocess.run(
        [sys.executable, "-m", "cli", *_command(command)],
        env=env,
        cwd=tmp_path,  # no stray .env
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("batch-export: invalid configuration: SECRET_KEY is the public development default")
    assert "ENVIRONMENT=production" in lines[0]


def _first_stderr_line(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", *argv],
        env=env,
        cwd=cwd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stderr.readline()), daemon=True).start()
    try:
        return lines.get(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=30)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_outside_production_an_unset_secret_is_a_loud_warning_at_start(tmp_path, command):
    line = _first_stderr_line(_command(command), _env(), tmp_path)
    assert line.startswith(f"batch-export {command}: WARNING: SECRET_KEY is not set"), line
    assert "forge" in line


OWN_SECRET = "a-production-secret-of-its-own-0123456789"
OWN_ENCRYPTION_KEY = "8f" * 32


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize("key", [None, INSECURE_DEV_ENCRYPTION_KEY])
def test_production_refuses_the_development_encryption_key_in_one_line(tmp_path, command, key):
    """The key that seals scheduled exports' bucket credentials is as much a secret as SECRET_KEY."""
    env = _env(ENVIRONMENT="production", SECRET_KEY=OWN_SECRET, **({"SECRETS_ENCRYPTION_KEY": key} if key else {}))
    result = subprocess.run(
        [sys.executable, "-m", "cli", *_command(command)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SECRETS_ENCRYPTION_KEY is the public development default" in lines[0], lines[0]


def test_production_with_a_secret_of_its_own_starts_without_the_warning(tmp_path):
    env = _env(ENVIRONMENT="production", SECRET_KEY=OWN_SECRET, SECRETS_ENCRYPTION_KEY=OWN_ENCRYPTION_KEY)
    # The worker's first words are then about Redis (unreachable here), not about the secret.
    line = _first_stderr_line(["worker"], env, tmp_path)
    assert "Redis" in line and "SECRET_KEY" not in line, line
