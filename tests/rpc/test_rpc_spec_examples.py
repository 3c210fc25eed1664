"""The examples of the JSON-RPC 2.0 specification (section 7), over HTTP, reply for reply.

Our error objects carry `data` ({code, httpStatus, path}) beyond the spec's code and
message; the spec allows it, and the bodies below include it in full.
"""

from __future__ import annotations

import json
from typing import Any

PARSE_ERROR = {
    "code": -32700,
    "message": "Parse error",
    "data": {"code": "PARSE_ERROR", "httpStatus": 400, "path": None},
}
INVALID_REQUEST = {
    "code": -32600,
    "message": "Invalid Request",
    "data": {"code": "BAD_REQUEST", "httpStatus": 400, "path": None},
}


def method_not_found(path: str) -> dict[str, Any]:
    return {
        "code": -32601,
        "message": "Method not found",
        "data": {"code": "NOT_FOUND", "httpStatus": 404, "path": path},
    }


def unordered(replies: list[dict[str, Any]]) -> list[str]:
    # The spec lets a server answer a batch in any order.
    return sorted(json.dumps(reply, sort_keys=True) for reply in replies)


def test_positional_params_subtract_42_23(post_rpc):
    response = post_rpc('{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}')
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "result": 19, "id": 1}


def test_positional_params_subtract_23_42(post_rpc):
    response = post_rpc('{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}')
    assert response.json() == {"jsonrpc": "2.0", "result": -19, "id": 2}


def test_named_params_subtract(post_rpc):
    response = post_rpc(
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}'
    )
    assert response.json() == {"jsonrpc": "2.0", "result": 19, "id": 3}


def test_named_params_in_any_order(post_rpc):
    response = post_rpc(
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}'
    )
    assert response.json() == {"jsonrpc": "2.0", "result": 19, "id": 4}


def test_notification_gets_no_reply(post_rpc):
    response = post_rpc('{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}')
    assert response.status_code == 204
    assert response.content == b""


def test_notification_to_missing_method_gets_no_reply(post_rpc):
    response = post_rpc('{"jsonrpc": "2.0", "method": "foobar"}')
    assert response.status_code == 204
    assert response.content == b""


def test_non_existent_method(post_rpc):
    response = post_rpc('{"jsonrpc": "2.0", "method": "foobar", "id": "1"}')
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "error": method_not_found("foobar"), "id": "1"}


def test_invalid_json(post_rpc):
    response = post_rpc('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]')
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "error": PARSE_ERROR, "id": None}


def test_invalid_request_object(post_rpc):
    response = post_rpc('{"jsonrpc": "2.0", "method": 1, "params": "bar"}')
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "error": INVALID_REQUEST, "id": None}


def test_batch_with_invalid_json(post_rpc):
    response = post_rpc(
        '[ {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method" ]'
    )
    assert response.json() == {"jsonrpc": "2.0", "error": PARSE_ERROR, "id": None}


def test_empty_array_is_one_invalid_request(post_rpc):
    response = post_rpc("[]")
    assert response.json() == {"jsonrpc": "2.0", "error": INVALID_REQUEST, "id": None}


def test_non_empty_invalid_batch_gets_a_reply_per_member(post_rpc):
    response = post_rpc("[1]")
    assert response.json() == [{"jsonrpc": "2.0", "error": INVALID_REQUEST, "id": None}]


def test_invalid_batch_of_three_gets_three_replies(post_rpc):
    response = post_rpc("[1,2,3]")
    assert response.json() == [{"jsonrpc": "2.0", "error": INVALID_REQUEST, "id": None}] * 3


def test_mixed_batch(post_rpc):
    response = post_rpc(
        """[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
        ]"""
    )
    assert response.status_code == 200
    assert unordered(response.json()) == unordered(
        [
            {"jsonrpc": "2.0", "result": 7, "id": "1"},
            {"jsonrpc": "2.0", "result": 19, "id": "2"},
            {"jsonrpc": "2.0", "error": INVALID_REQUEST, "id": None},
            {"jsonrpc": "2.0", "error": method_not_found("foo.get"), "id": "5"},
            {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"},
        ]
    )


def test_batch_of_notifications_gets_no_reply(post_rpc):
    response = post_rpc(
        """[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
        ]"""
    )
    assert response.status_code == 204
    assert response.content == b""
