"""create_context: called once per HTTP request; its failures answer every call in it."""

from __future__ import annotations

import logging

BATCH = [
    {"jsonrpc": "2.0", "method": "anonymous", "id": 1},
    {"jsonrpc": "2.0", "method": "anonymous"},
    {"jsonrpc": "2.0", "method": "subtract", "params": [2, 1], "id": 2},
]


def test_rpc_error_from_create_context_answers_each_call(post_rpc):
    replies = post_rpc(BATCH, headers={"x-context-failure": "rpc-error"}).json()
    assert replies == [
        {
            "jsonrpc": "2.0",
            "error": {
                "code": -32029,
                "message": "Slow down",
                "data": {"code": "TOO_MANY_REQUESTS", "httpStatus": 429, "path": path},
            },
            "id": id,
        }
        for path, id in (("anonymous", 1), ("subtract", 2))
    ]


def test_crash_in_create_context_is_a_logged_generic_error(post_rpc, caplog):
    with caplog.at_level(logging.ERROR):
        response = post_rpc(BATCH, headers={"x-context-failure": "crash"})
    replies = response.json()
    assert [r["id"] for r in replies] == [1, 2]
    assert {r["error"]["code"] for r in replies} == {-32603}
    assert "hunter2" not in response.text
    request_id = replies[0]["error"]["data"]["requestId"]
    assert any(request_id in record.getMessage() for record in caplog.records)


def test_context_is_not_created_for_a_body_without_valid_requests(post_rpc):
    # The failing context would turn these into -32029/-32603 if it were created.
    assert post_rpc("[1]", headers={"x-context-failure": "crash"}).json()[0]["error"]["code"] == -32600
    assert post_rpc("nope", headers={"x-context-failure": "crash"}).json()["error"]["code"] == -32700
