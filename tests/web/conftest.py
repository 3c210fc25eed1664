"""The exports page in Debian's chromium, driven headless by Playwright, against the suite's real API."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.support.web import CHROMIUM, CHROMIUM_ARGS, WEB_DIR, WORKER_SETTINGS, RunningWorker, browser_page, run


@pytest.fixture(scope="session")
def web_node_modules() -> Path:
    """web/node_modules as `npm ci` installs it from the committed lock file (once, under a lock)."""
    stamp = WEB_DIR / "node_modules" / ".installed-from-lock"
    digest = hashlib.sha256(
        (WEB_DIR / "package.json").read_bytes() + (WEB_DIR / "package-lock.json").read_bytes()
    ).hexdigest()
    lock_path = Path(tempfile.gettempdir()) / f"npm-ci-{hashlib.sha256(str(WEB_DIR).encode()).hexdigest()[:16]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.is_file() and stamp.read_text() == digest):
            result = run(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"])
            assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
            stamp.write_text(digest)
    return WEB_DIR / "node_modules"


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium"
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser, api) -> Iterator[Page]:
    """A fresh browser profile on the suite's API; fails on any script error."""
    with browser_page(browser, api.url) as page:
        yield page


@pytest.fixture
def export_worker(settings, redis_client, tmp_path: Path) -> Iterator[RunningWorker]:
    """`batch-export worker`, the operators' RQ worker, as its own process for one test."""
    # The api fixture's own settings, named explicitly: what another test left in os.environ does not count.
    env = {**os.environ, **{name: str(getattr(settings, name)) for name in WORKER_SETTINGS}}
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield RunningWorker(process, log_path)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    log.close()
