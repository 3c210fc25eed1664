"""The TypeScript client package, installed from its lock file and compiled once per test session."""

from __future__ import annotations

import fcntl
import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from tests.ts.client_package import CLIENT_DIR, TSC, lock_digest, run


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """clients/ts/node_modules as `npm ci` installs it from the committed lock file.

    npm ci replaces node_modules wholesale, which would pull the rug from another session
    compiling in the same checkout; so it runs only when package.json or the lock file changed
    since the last install, and under a lock.
    """
    stamp = CLIENT_DIR / "node_modules" / ".installed-from-lock"
    lock_path = Path(tempfile.gettempdir()) / f"npm-ci-{hashlib.sha256(str(CLIENT_DIR).encode()).hexdigest()[:16]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = lock_digest()
        if not (stamp.is_file() and stamp.read_text() == digest):
            result = run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"])
            assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
            stamp.write_text(digest)
    return CLIENT_DIR / "node_modules"


@pytest.fixture(scope="session")
def compiled(node_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package compiled to JavaScript (client, type tests, live script) in a temp folder."""
    out_dir = tmp_path_factory.mktemp("ts-build")
    result = run([TSC, "-p", "tsconfig.json", "--outDir", out_dir, "--pretty", "false"])
    assert result.returncode == 0, result.stdout + result.stderr
    # The emitted .js files are ES modules, as package.json says for the sources.
    (out_dir / "package.json").write_text(json.dumps({"type": "module"}))
    return out_dir
