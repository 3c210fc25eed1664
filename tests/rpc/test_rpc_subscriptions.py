"""Subscriptions over server-sent events, read by httpx-sse (an SSE client that follows the HTML standard)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

STREAM = {"accept": "text/event-stream", "content-type": "application/json"}


def request(method: str, params: Any = None, id: Any = 7) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def read_all(client: httpx.Client, body: Any, headers: dict[str, str] | None = None) -> list[ServerSentEvent]:
    """Every event of a stream that ends by itself (comments and the prelude are not events)."""
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    with connect_sse(client, "POST", "/rpc", content=content, headers={**STREAM, **(headers or {})}) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return list(source.iter_sse())


def data(event: ServerSentEvent) -> Any:
    return json.loads(event.data)


def test_each_event_is_a_json_rpc_notification_with_its_id(client):
    events = read_all(client, request("ticks", {"count": 3}, id="sub-1"))

    *ticks, last = events
    assert [e.id for e in ticks] == ["1", "2", "3"]
    assert [e.event for e in ticks] == ["message"] * 3
    assert [data(e) for e in ticks] == [
        {"jsonrpc": "2.0", "method": "ticks", "params": {"subscription": "sub-1", "result": {"n": n}}}
        for n in (1, 2, 3)
    ]
    # The handler had nothing more: the stream says so, rather than just closing.
    assert last.event == "return"
    assert data(last) == {"jsonrpc": "2.0", "result": None, "id": "sub-1"}


def test_the_stream_opens_with_a_comment(client):
    with client.stream("POST", "/rpc", content=json.dumps(request("ticks", {"count": 1})), headers=STREAM) as response:
        raw = response.read()
    assert raw.startswith(b": stream open\n\n")
    assert response.headers["cache-control"] == "no-cache, no-transform"


def test_a_checkpoint_is_an_id_line_alone(client):
    with client.stream("POST", "/rpc", content=json.dumps(request("checkpointed")), headers=STREAM) as response:
        raw = response.read()
    assert raw.startswith(b": stream open\n\nid: 7\n\nid: 8\ndata: ")
    # httpx-sse hands the id over as an event without data (a browser's EventSource dispatches none).
    events = read_all(client, request("checkpointed"))
    assert [(e.id, e.data) for e in events[:1]] == [("7", "")]
    assert data(events[1])["params"]["result"] == {"n": 8}


def test_last_event_id_resumes_after_that_event(client):
    events = read_all(client, request("ticks", {"count": 5}), headers={"last-event-id": "3"})

    assert [e.id for e in events if e.event == "message"] == ["4", "5"]


def test_last_event_id_fills_the_input_even_over_what_the_request_says(client):
    # A reconnecting client resends its first request: the header says where it really was.
    events = read_all(client, request("ticks", {"count": 4, "lastEventId": "1"}), headers={"last-event-id": "2"})

    assert [e.id for e in events if e.event == "message"] == ["3", "4"]


def test_an_error_in_the_handler_ends_the_stream_with_one_error_event(client):
    first, last = read_all(client, request("fail_after_one"))

    assert data(first)["params"]["result"] == {"n": 1}
    assert last.event == "error"
    assert data(last) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": -32012,
            "message": "The thing went away",
            "data": {"code": "PRECONDITION_FAILED", "httpStatus": 412, "path": "fail_after_one"},
        },
    }


def test_an_unexpected_exception_is_an_internal_error_without_its_text(client):
    _, last = read_all(client, request("crash_after_one"))

    error = data(last)["error"]
    assert last.event == "error"
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "hunter2" not in last.data
    assert len(error["data"]["requestId"]) == 32


def test_an_event_that_does_not_match_the_output_model_is_an_internal_error(client):
    (only,) = read_all(client, request("wrong_event"))

    assert only.event == "error"
    assert data(only)["error"]["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "not a number" not in only.data


@pytest.mark.parametrize(
    ("body", "code", "message_part"),
    [
        (request("no_such_method"), "NOT_FOUND", "Method not found"),
        (request("sum", {"a": 1}), "BAD_REQUEST", "sum is a query, not a subscription"),
        (request("ticks", {"count": -1}), "BAD_REQUEST", "count"),
        (request("ticks", {"count": 1, "extra": True}) | {"id": None}, None, None),
        ([request("ticks", {"count": 1})], "BAD_REQUEST", "not a batch or a notification"),
        ({"jsonrpc": "2.0", "method": "ticks", "params": {"count": 1}}, "BAD_REQUEST", "notification"),
        ("{not json", "PARSE_ERROR", "Parse error"),
    ],
    ids=["unknown method", "a query", "bad params", "null id", "a batch", "a notification", "not JSON"],
)
def test_a_refused_subscription_is_one_error_event(client, body, code, message_part):
    events = read_all(client, body)

    if code is None:  # a null id is a valid id: the stream answers it
        assert [e.event for e in events] == ["message", "return"]
        assert data(events[0])["params"]["subscription"] is None
        return
    (only,) = events
    assert only.event == "error"
    error = data(only)["error"]
    assert error["data"]["code"] == code
    assert message_part in error["message"]


def test_middlewares_run_when_a_subscription_opens(client):
    (only,) = read_all(client, request("whoami_stream"))
    assert data(only)["error"]["data"]["code"] == "UNAUTHORIZED"

    first, last = read_all(client, request("whoami_stream"), headers={"authorization": "Bearer alice"})
    result = data(first)["params"]["result"]
    assert result["user"] == "user-of-alice"
    assert result["trail"] == ["first"]
    assert last.event == "return"


def test_what_a_handler_sets_up_is_in_place_when_the_stream_opens(client, probe):
    before = probe.set_up
    with connect_sse(client, "POST", "/rpc", json=request("set_up_first", {}), headers=STREAM) as source:
        assert probe.set_up == before + 1  # the headers came after the set-up, not before
        events = list(source.iter_sse())
    assert [e.event for e in events] == ["message", "return"]
    assert data(events[0])["params"]["result"] == {"n": before + 1}


def test_a_set_up_that_fails_refuses_the_stream_and_is_observed_so(client, observed):
    (only,) = read_all(client, request("set_up_first", {"fail": True}))

    assert only.event == "error"
    assert data(only)["error"]["data"]["code"] == "NOT_FOUND"
    assert [(method, error) for method, error, _ in observed] == [("set_up_first", "NOT_FOUND")]


def test_a_subscription_called_without_an_event_stream_is_told_how_to_call_it(call):
    reply = call("ticks", {"count": 1})

    assert reply["error"]["data"]["code"] == "BAD_REQUEST"
    assert "send it alone with `Accept: text/event-stream`" in reply["error"]["message"]


def test_the_observer_is_told_when_a_stream_opens_or_is_refused(client, observed):
    read_all(client, request("ticks", {"count": 1}))
    read_all(client, request("whoami_stream"))

    assert [(method, error) for method, error, _ in observed] == [
        ("ticks", None),
        ("whoami_stream", "UNAUTHORIZED"),
    ]


def test_an_idle_stream_carries_heartbeat_comments(client):
    with client.stream(
        "POST", "/rpc", content=json.dumps(request("one_then_wait")), headers=STREAM, timeout=10
    ) as response:
        seen = b""
        for chunk in response.iter_raw():
            seen += chunk
            if seen.count(b": heartbeat\n\n") >= 2:
                break
    assert b'"result":{"n":1}' in seen


def test_closing_the_connection_closes_the_handler(server_url, probe):
    opened_before = probe.opened
    with (
        httpx.Client(base_url=server_url, timeout=10) as client,
        connect_sse(client, "POST", "/rpc", json=request("one_then_wait"), headers=STREAM) as source,
    ):
        first = next(source.iter_sse())
        assert data(first)["params"]["result"] == {"n": 1}
    assert probe.opened == opened_before + 1
    # The handler's `finally` runs once the server sees the connection gone (bounded wait, not a race);
    # a stream an earlier test left open closes too.
    deadline = time.monotonic() + 10
    while probe.closed < probe.opened and time.monotonic() < deadline:
        time.sleep(0.02)
    assert probe.closed == probe.opened


def test_a_reader_that_stops_reading_holds_the_handler_back_then_is_dropped(server_url, probe):
    """Backpressure: the handler is pulled as the client reads, so a stalled reader never makes the
    server buffer events without bound; what is in flight is what the sockets hold. A reader that takes
    nothing for the send timeout is then dropped (it would resume with Last-Event-ID), and the handler
    closed, though the client never hung up."""
    stop = threading.Event()
    produced_at_start, closed_at_start = probe.produced, probe.hoses_closed

    def stalled_reader() -> None:
        with (
            httpx.Client(base_url=server_url, timeout=30) as client,
            client.stream("POST", "/rpc", content=json.dumps(request("firehose")), headers=STREAM) as response,
        ):
            next(response.iter_raw())  # the stream is open; now read nothing more
            stop.wait(60)

    reader = threading.Thread(target=stalled_reader, daemon=True)
    reader.start()
    try:
        # Wait until production stops: it must, because nothing is read (bounded: 60 s).
        deadline = time.monotonic() + 60
        last, still_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            produced = probe.produced - produced_at_start
            if produced != last:
                last, still_since = produced, time.monotonic()
            elif produced > 0 and time.monotonic() - still_since > 1.5:
                break
            time.sleep(0.05)
        produced_bytes = (probe.produced - produced_at_start) * 65536
        # The kernel's socket buffers on loopback hold a few MiB at most; an unbounded server would go on.
        assert 0 < produced_bytes < 32 * 1024 * 1024, produced_bytes
        while probe.hoses_closed == closed_at_start:
            assert time.monotonic() < deadline, "the stalled stream was never dropped"
            time.sleep(0.05)
        assert probe.hoses_closed == closed_at_start + 1
    finally:
        stop.set()
        reader.join(timeout=30)
