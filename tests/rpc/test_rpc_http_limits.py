"""What the endpoint does with bodies and batches at and beyond its limits."""

from __future__ import annotations

import json
from collections.abc import Iterator

LIMIT = 1_048_576  # rpc_routes' default max_body_bytes, DESIGN.md's 1 MiB


def oversize_request() -> bytes:
    padding = "x" * (LIMIT + 1024)
    return json.dumps({"jsonrpc": "2.0", "method": "get_data", "params": {"pad": padding}, "id": 1}).encode()


def test_body_over_limit_with_content_length_is_413(client):
    body = oversize_request()
    response = client.post("/rpc", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    reply = response.json()
    assert reply["id"] is None
    assert reply["error"]["data"]["httpStatus"] == 413
    assert reply["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE"


def test_chunked_body_over_limit_is_413(client):
    body = oversize_request()

    def chunks() -> Iterator[bytes]:  # a generator body: no Content-Length, chunked encoding
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = client.post("/rpc", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE"


def test_chunked_body_under_limit_is_served(client):
    body = json.dumps({"jsonrpc": "2.0", "method": "subtract", "params": [5, 3], "id": 1}).encode()
    response = client.post("/rpc", content=iter([body[:10], body[10:]]), headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "result": 2, "id": 1}


def test_batch_of_51_is_one_bad_request(post_rpc):
    batch = [{"jsonrpc": "2.0", "method": "subtract", "params": [i, 1], "id": i} for i in range(51)]
    response = post_rpc(batch)
    assert response.status_code == 200
    reply = response.json()
    assert isinstance(reply, dict)
    assert reply["id"] is None
    assert reply["error"]["code"] == -32600
    assert reply["error"]["data"] == {"code": "BAD_REQUEST", "httpStatus": 400, "path": None}
    assert "50" in reply["error"]["message"]


def test_batch_of_50_is_served(post_rpc):
    batch = [{"jsonrpc": "2.0", "method": "subtract", "params": [i, 1], "id": i} for i in range(50)]
    replies = post_rpc(batch).json()
    assert sorted((r["id"], r["result"]) for r in replies) == [(i, i - 1) for i in range(50)]


def test_only_notifications_is_204_with_empty_body(post_rpc):
    response = post_rpc([{"jsonrpc": "2.0", "method": "subtract", "params": [1, 1]}] * 3)
    assert response.status_code == 204
    assert response.content == b""


def test_batch_replies_keep_request_order(post_rpc):
    batch = [
        {"jsonrpc": "2.0", "method": "subtract", "params": [3, 1], "id": "a"},
        {"jsonrpc": "2.0", "method": "nope", "id": "b"},
        7,
        {"jsonrpc": "2.0", "method": "subtract", "params": [9, 1], "id": "c"},
    ]
    assert [r["id"] for r in post_rpc(batch).json()] == ["a", "b", None, "c"]


def test_invalid_request_with_readable_id_is_answered_with_that_id(post_rpc):
    reply = post_rpc({"jsonrpc": "1.0", "method": "subtract", "id": 7}).json()
    assert reply["id"] == 7
    assert reply["error"]["code"] == -32600


def test_null_id_is_a_request_not_a_notification(post_rpc):
    assert post_rpc({"jsonrpc": "2.0", "method": "subtract", "params": [2, 1], "id": None}).json() == {
        "jsonrpc": "2.0",
        "result": 1,
        "id": None,
    }


def test_boolean_id_is_an_invalid_request(post_rpc):
    reply = post_rpc({"jsonrpc": "2.0", "method": "subtract", "params": [2, 1], "id": True}).json()
    assert reply == {
        "jsonrpc": "2.0",
        "error": {
            "code": -32600,
            "message": "Invalid Request",
            "data": {"code": "BAD_REQUEST", "httpStatus": 400, "path": None},
        },
        "id": None,
    }


def test_nan_is_a_parse_error(post_rpc):
    reply = post_rpc('{"jsonrpc": "2.0", "method": "subtract", "params": [NaN, 1], "id": 1}').json()
    assert reply["error"]["code"] == -32700


def test_invalid_utf8_is_a_parse_error(post_rpc):
    reply = post_rpc(b'{"jsonrpc": "2.0", "method": "\xff", "id": 1}').json()
    assert reply["error"]["code"] == -32700


def test_get_on_the_rpc_path_is_405(client):
    assert client.get("/rpc").status_code == 405


def test_connection_keeps_serving_after_a_413(client):
    huge = b"[" + b" " * (8 * LIMIT) + b"]"
    assert client.post("/rpc", content=huge).status_code == 413
    response = client.post("/rpc", json={"jsonrpc": "2.0", "method": "subtract", "params": [2, 1], "id": 1})
    assert response.json()["result"] == 1


def test_deeply_nested_json_is_a_parse_error(post_rpc):
    reply = post_rpc("[" * 200_000 + "]" * 200_000).json()
    assert reply["error"]["code"] == -32700


def test_param_names_that_are_not_python_identifiers_are_fine(post_rpc):
    request = {
        "jsonrpc": "2.0",
        "method": "subtract",
        "params": {"minuend": 3, "subtrahend": 1, "not-an-identifier": 0, "ctx": 1},
        "id": 1,
    }
    assert post_rpc(request).json()["result"] == 2
