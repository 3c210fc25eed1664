"""The endpoint's call observer: one report per call answered, with its method, error key and duration."""

from __future__ import annotations


def test_a_successful_call_is_reported_with_its_method_and_no_error(call, observed):
    assert call("subtract", {"minuend": 3, "subtrahend": 1})["result"] == 2
    assert [(method, error) for method, error, _ in observed] == [("subtract", None)]
    assert observed[0][2] >= 0


def test_an_error_is_reported_with_its_key_from_the_error_table(call, observed):
    call("whoami")  # no token: UNAUTHORIZED from the middleware
    call("subtract", {"minuend": "three"})  # params fail the input model
    call("explode")
    call("raise_error", {"key": "FORBIDDEN", "message": "no"})
    assert [(method, error) for method, error, _ in observed] == [
        ("whoami", "UNAUTHORIZED"),
        ("subtract", "BAD_REQUEST"),
        ("explode", "INTERNAL_SERVER_ERROR"),
        ("raise_error", "FORBIDDEN"),
    ]


def test_an_unknown_method_is_reported_without_its_name(call, observed):
    # Names a client made up must not become label values: the observer hears None.
    assert call("no.such.method")["error"]["code"] == -32601
    assert [(method, error) for method, error, _ in observed] == [(None, "METHOD_NOT_FOUND")]


def test_each_member_of_a_batch_and_each_notification_is_one_call(post_rpc, observed):
    response = post_rpc(
        [
            {"jsonrpc": "2.0", "method": "sum", "params": {"a": 1, "b": 2}, "id": 1},
            {"jsonrpc": "2.0", "method": "notify_hello", "params": {"value": 7}},
            {"foo": "boo"},
            {"jsonrpc": "2.0", "method": "get_data", "id": 9},
        ]
    )
    assert response.status_code == 200
    assert sorted((str(method), str(error)) for method, error, _ in observed) == [
        ("None", "INVALID_REQUEST"),
        ("get_data", "None"),
        ("notify_hello", "None"),
        ("sum", "None"),
    ]


def test_refused_bodies_are_one_call_of_no_method(post_rpc, observed):
    post_rpc("{not json")
    post_rpc({"jsonrpc": "2.0", "id": 1})  # not a request object: no method
    post_rpc([])
    post_rpc("[" + ",".join(['{"jsonrpc":"2.0","method":"sum","id":1}'] * 51) + "]")  # over the batch limit
    post_rpc("x" * 1_048_577)
    assert [(method, error) for method, error, _ in observed] == [
        (None, "PARSE_ERROR"),
        (None, "INVALID_REQUEST"),
        (None, "INVALID_REQUEST"),
        (None, "INVALID_REQUEST"),
        (None, "PAYLOAD_TOO_LARGE"),
    ]


def test_a_failing_context_reports_every_call_it_refused(call, observed):
    call("subtract", {"minuend": 3, "subtrahend": 1}, headers={"x-context-failure": "rpc-error"})
    call("no.such.method", headers={"x-context-failure": "crash"})
    assert [(method, error) for method, error, _ in observed] == [
        ("subtract", "TOO_MANY_REQUESTS"),
        (None, "INTERNAL_SERVER_ERROR"),
    ]


def test_discovery_is_a_call_too(call, observed):
    assert call("rpc.discover")["result"]["openrpc"]
    assert [(method, error) for method, error, _ in observed] == [("rpc.discover", None)]
