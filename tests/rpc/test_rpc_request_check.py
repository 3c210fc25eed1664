"""The fast request-object check agrees with jsonrpcserver's own JSON Schema for requests."""

from __future__ import annotations

import pytest
from jsonrpcserver.main import default_validator

from rpc.protocol import is_request

CASES = [
    {"jsonrpc": "2.0", "method": "a"},
    {"jsonrpc": "2.0", "method": "a", "id": 1},
    {"jsonrpc": "2.0", "method": "a", "id": 1.5},
    {"jsonrpc": "2.0", "method": "a", "id": "x"},
    {"jsonrpc": "2.0", "method": "a", "id": None},
    {"jsonrpc": "2.0", "method": "a", "id": True},
    {"jsonrpc": "2.0", "method": "a", "id": [1]},
    {"jsonrpc": "2.0", "method": "a", "id": {}},
    {"jsonrpc": "2.0", "method": "a", "params": []},
    {"jsonrpc": "2.0", "method": "a", "params": {}},
    {"jsonrpc": "2.0", "method": "a", "params": "bar"},
    {"jsonrpc": "2.0", "method": "a", "params": None},
    {"jsonrpc": "2.0", "method": "a", "params": 3},
    {"jsonrpc": "2.0", "method": 1},
    {"jsonrpc": "2.0", "method": None},
    {"jsonrpc": "2.0"},
    {"method": "a"},
    {"jsonrpc": "1.0", "method": "a"},
    {"jsonrpc": 2.0, "method": "a"},
    {"jsonrpc": "2.0", "method": "a", "extra": 1},
    {"foo": "boo"},
    {},
    1,
    "x",
    None,
    True,
]


@pytest.mark.parametrize("message", CASES, ids=repr)
def test_request_check_matches_jsonrpcservers_schema(message):
    try:
        default_validator(message)
        schema_says = True
    except Exception:
        schema_says = False
    assert is_request(message) is schema_says


def test_replies_are_compact_utf8_and_survive_a_lone_surrogate_id():
    """A request id like "\\ud800" is valid JSON but not UTF-8: the reply escapes it instead of failing."""
    import json

    from rpc.protocol import encode, failure, success

    reply = encode(success(1, {"name": 'naïve, "quoted"\n', "n": [1, 2.5, None, True]}))
    assert reply == json.dumps(json.loads(reply), separators=(",", ":"), ensure_ascii=False).encode()
    assert "naïve".encode() in reply

    odd = encode(failure("\ud800", {"code": -32601, "message": "Method not found"}))
    assert json.loads(odd)["id"] == "\ud800"
