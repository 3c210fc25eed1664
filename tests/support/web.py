"""The exports page's build and a worker process beside the browser tests."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

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


def wait_until_following(api, project_id: str, timeout: float = 30) -> None:
    """Waits until the API follows the project's export changes for a stream a client is opening (a page's,
    or a Node client's): once a stream is open no change is missed, but the test does not see the client
    open it, and a change committed before it opened is not the stream's to carry."""
    feed = api.server.config.app.state.resources.export_changes
    deadline = time.monotonic() + timeout
    while not feed.following(project_id):
        assert time.monotonic() < deadline, f"the API never started following project {project_id}"
        time.sleep(0.01)


# Console errors a test causes on purpose (it fails requests), by page: `allow_console_errors`.
_ALLOWED_CONSOLE_ERRORS: dict[Page, list[re.Pattern[str]]] = {}


def allow_console_errors(page: Page, pattern: str) -> None:
    """Console errors matching `pattern` are the test's own doing (e.g. requests it fails): not a script error."""
    _ALLOWED_CONSOLE_ERRORS.setdefault(page, []).append(re.compile(pattern))


@contextmanager
def browser_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A fresh browser profile (no stored token) on a desktop-sized window at `base_url`; fails on any script
    error, and on any console error the test did not say it causes."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True, base_url=base_url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(f"uncaught: {error}"))
    page.on(
        "console", lambda message: script_errors.append(f"console: {message.text}") if message.type == "error" else None
    )
    yield page
    context.close()
    allowed = _ALLOWED_CONSOLE_ERRORS.pop(page, [])
    unexpected = [e for e in script_errors if not (e.startswith("console: ") and any(p.search(e) for p in allowed))]
    assert unexpected == [], unexpected


def sign_in_with_link(page: Page, project_id: str, token: str) -> None:
    page.goto(f"/#token={token}&project={project_id}")
    expect(page.locator("#account-project")).to_have_text(project_id)


def wait_until_live(page: Page, api, project_id: str, timeout_ms: float = 15_000) -> None:
    """The exports list follows the project's stream: the list is drawn from it, and the API has it in place."""
    expect(page.locator("#exports-summary")).to_contain_text("· live", timeout=timeout_ms)
    wait_until_following(api, project_id)
