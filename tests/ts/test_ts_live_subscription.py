"""client.batchExport.onChange.subscribe against the real service: a Node script follows the stream
(clients/ts/test/live.ts), and the test makes the changes, or cuts the connection, when the script says it is ready."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from db import batch_exports
from tests.support.event_streams import complete_as_a_worker
from tests.support.processes import TcpProxy
from tests.support.web import wait_until_following
from tests.ts.client_package import CLIENT_DIR

# Long enough for a busy two-core machine; a working stream answers in milliseconds.
LINE_TIMEOUT_S = 60


class NodeScenario:
    """`node live.js <scenario>`, its JSON lines read as they come, and lines written to its stdin."""

    def __init__(self, compiled: Path, scenario: str, api, project, token: str, **env: str) -> None:
        environment = {**os.environ, "RPC_URL": f"{api.url}/rpc", "TOKEN": token, "PROJECT_ID": project.id, **env}
        self.process = subprocess.Popen(
            ["node", str(compiled / "test" / "live.js"), scenario],
            cwd=CLIENT_DIR,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next(self) -> dict[str, Any]:
        """The script's next JSON line; fails with its stderr if it exits or says nothing in time."""
        try:
            line = self._lines.get(timeout=LINE_TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"the script said nothing within {LINE_TIMEOUT_S} s") from None
        if line is None:
            self.process.wait(timeout=10)
            raise AssertionError(f"the script exited with {self.process.returncode}:\n{self.stderr()}")
        return json.loads(line)

    def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> dict[str, Any]:
        """The script's last line, once it exited successfully."""
        result = self.next()
        assert self.process.wait(timeout=LINE_TIMEOUT_S) == 0, self.stderr()
        return result

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def scenarios(compiled, api, project):
    started: list[NodeScenario] = []

    def start(scenario: str, token: str, **env: str) -> NodeScenario:
        script = NodeScenario(compiled, scenario, api, project, token, **env)
        started.append(script)
        return script

    yield start
    for script in started:
        script.close()


def test_a_new_export_reaches_the_subscriber_as_its_queued_event(scenarios, api, project, owner_token):
    script = scenarios("subscribe", owner_token)
    assert script.next() == {"started": True}
    wait_until_following(api, project.id)
    script.say("following")

    seen = script.finish()

    # The script checked the event is what create returned; its id is the change's place in the log.
    assert seen["eventId"].isdigit()
    assert seen["states"] == ["connecting", "open"]


def test_a_refused_subscription_calls_on_error_once_and_never_reconnects(scenarios, project, owner_token):
    viewer = project.member("VIEWER")

    seen = scenarios("refused", owner_token, OTHER_TOKEN=viewer).finish()

    assert seen["viewer"]["code"] == "FORBIDDEN" and seen["viewer"]["numeric"] == -32003
    assert "VIEWER" in seen["viewer"]["message"]
    assert seen["stranger"]["code"] == "UNAUTHORIZED" and seen["stranger"]["numeric"] == -32001
    assert seen["viewer"]["connections"] == seen["stranger"]["connections"] == 1
    assert seen["viewer"]["events"] == seen["stranger"]["events"] == 0


def test_a_cut_connection_resumes_with_last_event_id_and_loses_no_change(scenarios, api, project, owner_token, conn):
    export_id = project.new_export(conn)
    proxy = TcpProxy(urlsplit(api.url).port or 80).start()
    try:
        script = scenarios("resume", owner_token, STREAM_URL=f"{proxy.url}/rpc", EXPORT_ID=export_id)
        queued = script.next()
        assert queued["seen"] == "QUEUED"

        batch_exports.mark_processing(conn, export_id)
        script.say("processing")
        assert script.next()["seen"] == "PROCESSING"

        # The connection breaks, and none can be made until the changes below are in: they are
        # committed, for certain, while the client is away.
        proxy.cut()
        batch_exports.record_progress(conn, export_id, 120, 300)
        complete_as_a_worker(conn, export_id)
        proxy.restore()
        script.say("cut, completed and released")
        seen = script.finish()
    finally:
        proxy.cut()

    assert [event[:3] for event in seen["events"]] == [
        ["QUEUED", 0, None],
        ["PROCESSING", 0, None],
        ["PROCESSING", 120, 300],
        ["COMPLETED", 300, 300],
    ]
    ids = [int(event[3]) for event in seen["events"]]
    assert ids == sorted(set(ids))
    # One reconnection, resuming after the last event the first connection carried.
    assert seen["lastEventIds"] == [None, seen["events"][1][3]]
    assert seen["states"] == ["connecting", "open", "reconnecting", "open"]
