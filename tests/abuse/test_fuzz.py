"""Property-based fuzzing of POST /rpc: whatever arrives, the reply is a well-formed JSON-RPC error (or 413 / 204).

Methods and their params come from the served OpenRPC document, so a new procedure is fuzzed
without touching this file. Params are drawn from each method's JSON Schema (mostly well-formed,
so calls reach the middlewares and handlers), then damaged, or replaced by arbitrary JSON.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from db import access, batch_exports
from tests.support.abuse import ServedApi, assert_no_leak, assert_reply, json_body
from tests.support.world import new_project
from workers.tables import TABLES

# Bounded and derandomized, so CI is quick and reproducible; ABUSE_FUZZ_EXAMPLES=2000 explores further (and randomly).
_EXAMPLES = os.environ.get("ABUSE_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(_EXAMPLES or 150),
    deadline=None,
    derandomize=not _EXAMPLES,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
# Batches cost several calls each: fewer of them.
FUZZ_BATCHES = settings(FUZZ, max_examples=int(_EXAMPLES or 60))
TIMEOUT = 20  # seconds: a reply slower than this is a hang

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
COLUMN_NAMES = sorted({name for table in TABLES.values() for column in table.columns for name in column.names})


@pytest.fixture(scope="module")
def world(module_conn, abuse_api: ServedApi) -> dict[str, Any]:
    """Two projects, one with exports; tokens of several kinds; the served OpenRPC document."""
    mine = new_project(module_conn, "fuzzed project")
    other = new_project(module_conn, "someone else's project")
    owner = mine.member("OWNER")
    exports = [
        batch_exports.insert_params(
            project_id=p.id, user_id=None, name="seeded", format="CSV", query={"tableName": "traces"}
        )
        for p in (mine, other)
    ]
    ids = [module_conn.execute(batch_exports.INSERT_SQL, params).fetchone()["id"] for params in exports]
    revoked = mine.member("MEMBER")
    access.revoke_session(module_conn, revoked)
    document = abuse_api.http.get(f"{abuse_api.url}/rpc/openrpc.json").json()
    return {
        "conn": module_conn,
        "project": mine,
        "tokens": {
            "owner": owner,
            "viewer": mine.member("VIEWER"),
            "outsider": other.member("OWNER"),
            "revoked": revoked,
            "unknown": "bx_" + uuid.uuid4().hex,
            "none": None,
        },
        "hints": {"projectId": [mine.id] * 6 + [other.id, "", "nope"], "batchExportId": ids, "column": COLUMN_NAMES},
        "document": document,
    }


def schema_values(
    schema: dict, components: dict, hints: dict[str, list], name: str | None = None, depth: int = 0
) -> st.SearchStrategy:
    """Values for a JSON Schema (the subset pydantic emits), mixing in known-good values by property name."""
    if "$ref" in schema:
        return schema_values(components[schema["$ref"].rsplit("/", 1)[-1]], components, hints, name, depth)
    strategy = _schema_values(schema, components, hints, depth)
    if name in hints:
        # Mostly known values (the caller's project, real column names), so calls get past the checks.
        known = st.sampled_from(hints[name])
        strategy = st.one_of(known, known, known, strategy)
    return strategy


def _schema_values(schema: dict, components: dict, hints: dict, depth: int) -> st.SearchStrategy:
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return st.one_of([schema_values(s, components, hints, None, depth) for s in schema[combinator]])
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "date-time":
            return st.datetimes(timezones=st.none() | st.just(UTC)).map(lambda d: d.isoformat())
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 40))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array" and depth < 4:
        items = schema_values(schema.get("items", {}), components, hints, None, depth + 1)
        return st.lists(items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" and depth < 4:
        return _object_values(schema, components, hints, depth + 1)
    return json_values


def _object_values(schema: dict, components: dict, hints: dict, depth: int) -> st.SearchStrategy:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: schema_values(v, components, hints, k, depth) for k, v in properties.items() if k in required},
        optional={k: schema_values(v, components, hints, k, depth) for k, v in properties.items() if k not in required},
    )


def method_params(method: dict, components: dict, hints: dict) -> st.SearchStrategy:
    """By-name params as the method's schema wants them, then perhaps damaged."""
    as_object = {
        "properties": {p["name"]: p["schema"] for p in method["params"]},
        "required": [p["name"] for p in method["params"] if p.get("required")],
    }
    well_formed = _object_values(as_object, components, hints, 1)

    @st.composite
    def damaged(draw) -> Any:
        params = dict(draw(well_formed))
        action = draw(st.sampled_from(["drop", "replace", "extra", "positional"]))
        names = sorted(params)
        if action == "drop" and names:
            params.pop(draw(st.sampled_from(names)))
        elif action == "replace" and names:
            params[draw(st.sampled_from(names))] = draw(json_values)
        elif action == "extra":
            params[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        else:
            return list(params.values())
        return params

    anything = st.dictionaries(st.text(max_size=12), json_values, max_size=4) | st.lists(json_values, max_size=3)
    return st.one_of(*[well_formed] * 6, damaged(), damaged(), anything)


def _post(abuse_api: ServedApi, body: bytes, token: str | None):
    response = abuse_api.post(body, token=token, timeout=TIMEOUT)
    assert response.status_code in (200, 204, 413), (response.status_code, response.text[:2000])
    assert_no_leak(response.text, body, abuse_api.secrets)
    return response


def _tidy(world: dict, reply: dict) -> None:
    # A fuzzed create that succeeded would soon hit the active-export limit; finish it so later calls go deeper.
    result = reply.get("result")
    if isinstance(result, dict) and result.get("status") == "QUEUED" and "id" in result:
        world["conn"].execute("UPDATE batch_exports SET status = 'CANCELLED' WHERE id = %s", (result["id"],))


ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
token_names = st.sampled_from(["owner"] * 4 + ["viewer", "outsider", "revoked", "unknown", "none"])


@FUZZ
@given(body=st.binary(max_size=3000), token=token_names)
def test_arbitrary_bytes_get_a_json_rpc_reply(abuse_api, world, body, token):
    response = _post(abuse_api, body, world["tokens"][token])
    if response.status_code == 200:
        reply = response.json()
        for one in reply if isinstance(reply, list) else [reply]:
            assert_reply(one)


@FUZZ
@given(message=json_values | st.lists(json_values, min_size=1, max_size=5), token=token_names)
def test_arbitrary_json_gets_a_json_rpc_reply(abuse_api, world, message, token):
    response = _post(abuse_api, json_body(message), world["tokens"][token])
    assert response.status_code == 200, response.text
    reply = response.json()
    if isinstance(message, list) and message:
        # One reply per member: none of these is a valid request, so none is a notification.
        assert isinstance(reply, list) and len(reply) == len(message), reply
        for one in reply:
            assert_reply(one, request_id=None)
    else:
        assert_reply(reply)
        assert "error" in reply and reply["error"]["data"]["code"] == "BAD_REQUEST", reply


@st.composite
def requests(draw, world: dict) -> tuple[Any, bool]:
    """A request object for a documented method (or a made-up one), with fuzzed params and id."""
    document = world["document"]
    methods = document["methods"]
    method = draw(st.sampled_from(methods + [None]))
    if method is None:
        name = draw(st.sampled_from(["rpc.discover", "batchExport", "rpc.nope", ""]) | st.text(max_size=20))
        params = draw(json_values.filter(lambda v: isinstance(v, (list, dict))))
    else:
        name = method["name"]
        params = draw(method_params(method, document["components"]["schemas"], world["hints"]))
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": name}
    if draw(st.booleans()) or params:
        request["params"] = params
    notification = draw(st.integers(0, 9)) == 0
    if not notification:
        request["id"] = draw(st.integers() | st.text(max_size=10) | st.none())
    return request, notification


@FUZZ
@given(data=st.data(), token=token_names)
def test_arbitrary_params_for_every_method_get_a_result_or_a_documented_error(abuse_api, world, data, token):
    request, notification = data.draw(requests(world))
    response = _post(abuse_api, json_body(request), world["tokens"][token])
    if notification:
        assert response.status_code == 204 and response.content == b"", response.text
        return
    reply = response.json()
    assert_reply(reply, request_id=request["id"])
    # `pytest --hypothesis-show-statistics` shows how deep the calls got.
    known = any(m["name"] == request["method"] for m in world["document"]["methods"])
    event(
        f"{request['method'] if known else '(other)'} as {token}: {reply['error']['data']['code'] if 'error' in reply else 'result'}"
    )
    _tidy(world, reply)
    if "error" in reply and reply["error"]["data"]["path"] is not None:
        assert reply["error"]["data"]["path"] == request["method"], reply


@FUZZ_BATCHES
@given(data=st.data(), token=token_names)
def test_a_batch_of_fuzzed_requests_gets_one_reply_per_request_in_order(abuse_api, world, data, token):
    members = data.draw(st.lists(requests(world) | json_values.map(lambda v: (v, False)), min_size=1, max_size=6))
    batch = [request for request, _ in members]
    response = _post(abuse_api, json_body(batch), world["tokens"][token])
    answered = [r for r, notification in members if not notification]
    if not answered:
        assert response.status_code == 204, response.text
        return
    replies = response.json()
    assert isinstance(replies, list) and len(replies) == len(answered), replies
    for request, reply in zip(answered, replies):
        valid = isinstance(request, dict) and request.get("jsonrpc") == "2.0" and isinstance(request.get("method"), str)
        assert_reply(reply, request_id=request.get("id") if valid else ...)
        _tidy(world, reply)


@FUZZ
@given(
    header=st.one_of(
        ascii_text, ascii_text.map(lambda t: "Bearer " + t), ascii_text.map(lambda t: "bearer  bx_" + t)
    ).map(str.strip)
)
def test_any_authorization_header_is_unauthorized_not_a_crash(abuse_api, world, header):
    body = json_body(
        {"jsonrpc": "2.0", "id": 1, "method": "batchExport.all", "params": {"projectId": world["project"].id}}
    )
    response = abuse_api.post(body, headers={"Authorization": header}, timeout=TIMEOUT)
    assert response.status_code == 200
    reply = response.json()
    assert_reply(reply, request_id=1)
    assert reply["error"]["data"]["code"] == "UNAUTHORIZED", reply


def test_the_service_is_still_up_and_quiet_after_the_fuzzing(abuse_api, world):
    assert abuse_api.healthy()
    assert abuse_api.process.poll() is None
    owner = world["tokens"]["owner"]
    reply = json.loads(
        abuse_api.post(
            json_body(
                {"jsonrpc": "2.0", "id": 7, "method": "batchExport.all", "params": {"projectId": world["project"].id}}
            ),
            token=owner,
        ).text
    )
    assert reply["result"]["totalCount"] >= 1
    # Nothing the fuzzers sent was an internal error, so nothing was logged as one.
    assert "Traceback" not in abuse_api.log(), abuse_api.log()[-5000:]
