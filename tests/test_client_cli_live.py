"""The terminal client follows exports over the API's event stream: no polling, across an API restart,
a whole project's changes as lines, and polling only against an API that cannot stream."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
from prometheus_client import REGISTRY

from db import batch_exports
from devstack.servers import free_port
from procedures.app import create_app
from procedures.auth import rpc
from procedures.batch_export import batch_export_router
from rpc import Router
from tests.support.event_streams import complete_as_a_worker
from tests.support.servers import ServerThread
from tests.support.terminal import connection

WAIT_S = 60


class Screen:
    """A running command's stderr, read as it comes."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[str] = []
        assert process.stderr is not None
        stderr = process.stderr
        self._reader = threading.Thread(target=lambda: self.lines.extend(stderr), daemon=True)
        self._reader.start()

    def shows(self, text: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, f"{text!r} never shown:\n{''.join(self.lines)}"
            time.sleep(0.02)

    def text(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self.lines)

    def finish(self) -> tuple[int, str]:
        """The exit code and stdout, once the command ends (stderr is this screen's)."""
        try:
            code = self.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"the command did not finish:\n{self.text()}") from None
        assert self.process.stdout is not None
        return code, self.process.stdout.read()


def all_calls() -> float:
    """batchExport.all calls the suite's API (served in this process) has answered so far."""
    value = REGISTRY.get_sample_value("batch_export_rpc_calls_total", {"method": "batchExport.all", "code": "OK"})
    return value or 0.0


def complete(conn, export_id: str) -> None:
    batch_exports.mark_completed(
        conn,
        export_id,
        object_key="k.csv",
        rows_exported=300,
        file_bytes=10,
        sha256="cd" * 32,
        expires_hours=1,
        log=None,
    )


def test_waiting_follows_the_pushed_changes_and_asks_for_nothing(api, conn, project, owner_token, terminal):
    export_id = project.new_export(conn)
    # Asked to poll every 50 ms if it had to: it must not have to.
    process = terminal.start(
        "exports", "follow", *connection(api.url, owner_token, project.id), export_id, "--interval", "0.05"
    )
    screen = Screen(process)
    screen.shows("QUEUED")
    asked = all_calls()
    batch_exports.mark_processing(conn, export_id)
    screen.shows("PROCESSING")
    batch_exports.record_progress(conn, export_id, 120, 300)
    complete_as_a_worker(conn, export_id)

    code, out = screen.finish()
    assert code == 0, screen.text()
    assert "/exports/download?" in out.strip().splitlines()[-1]
    assert all_calls() == asked, "the wait asked the API for the list again"
    assert "COMPLETED" in screen.text()


def test_a_wait_outlives_an_api_restart_and_misses_nothing(settings, conn, project, owner_token, terminal):
    own = settings.model_copy(update={"PUBLIC_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    port = _port(own)
    export_id = project.new_export(conn)
    with ServerThread(create_app(own), port) as first:
        process = terminal.start("exports", "follow", *connection(first.url, owner_token, project.id), export_id)
        screen = Screen(process)
        screen.shows("QUEUED")
        batch_exports.mark_processing(conn, export_id)
        screen.shows("PROCESSING")
    # The API is gone (its streams ended as on SIGTERM); the export finishes meanwhile.
    batch_exports.mark_failed(conn, export_id, "the bucket is gone")
    with ServerThread(create_app(own), port):
        code, _ = screen.finish()
    shown = screen.text()
    assert code == 1, shown  # FAILED: learnt from the new API's replay
    assert f"export {export_id} FAILED: the bucket is gone" in shown


def test_following_a_project_prints_a_line_for_each_change(api, conn, project, owner_token, terminal):
    process = terminal.start("exports", "follow", *connection(api.url, owner_token, project.id))
    screen = Screen(process)
    screen.shows("live; Ctrl-C to stop")
    export_id = project.new_export(conn, name="watched from a terminal")
    batch_exports.mark_processing(conn, export_id)
    batch_exports.record_progress(conn, export_id, 120, 300)
    complete_as_a_worker(conn, export_id)
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(4)]
    process.send_signal(signal.SIGINT)
    code, _ = screen.finish()

    assert code == 130
    assert "stopped following" in screen.text()
    assert [line.split()[2] for line in lines] == [export_id] * 4
    assert [line.rstrip("\n").split("  ")[3:5] for line in lines] == [
        ["QUEUED", "-"],
        ["PROCESSING", "0 rows"],
        ["PROCESSING", "120/300 40%"],
        ["COMPLETED", "300/300 100%"],
    ]
    assert all("watched from a terminal" in line for line in lines)


def test_a_viewer_cannot_follow_and_is_told_why(api, project, terminal):
    viewer = project.member("VIEWER")
    result = terminal.run("exports", "follow", *connection(api.url, viewer, project.id))
    assert result.returncode == 4
    assert "FORBIDDEN" in result.stderr and "batchExports:read" in result.stderr


def ignoring_accept(app):
    """The app as an API from before live streams sees requests: it answers JSON whatever Accept says."""

    async def old_api(scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"accept"]}
        await app(scope, receive, send)

    old_api.state = app.state  # so the test server can end its streams (it has none)
    return old_api


@pytest.mark.parametrize("old", ["without onChange", "without streams at all"])
def test_against_an_api_that_cannot_stream_the_wait_asks_every_interval(
    settings, conn, project, owner_token, terminal, old
):
    without_on_change = Router(**{name: p for name, p in batch_export_router.procedures.items() if name != "onChange"})
    own = settings.model_copy(update={"PUBLIC_BASE_URL": f"http://127.0.0.1:{free_port()}"})
    app = create_app(own, router=rpc.router(batchExport=without_on_change))
    export_id = project.new_export(conn)
    with ServerThread(app if old == "without onChange" else ignoring_accept(app), _port(own)) as server:
        process = terminal.start(
            "exports", "follow", *connection(server.url, owner_token, project.id), export_id, "--interval", "0.1"
        )
        screen = Screen(process)
        screen.shows("QUEUED")
        batch_exports.mark_processing(conn, export_id)
        screen.shows("PROCESSING")
        complete_as_a_worker(conn, export_id)
        code, out = screen.finish()
    assert code == 0, screen.text()
    assert "/exports/download?" in out


def _port(settings) -> int:
    return int(settings.PUBLIC_BASE_URL.rsplit(":", 1)[1])
