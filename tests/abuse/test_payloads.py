"""Hostile payloads: formulas in the data, and requests built to be expensive.

CSV cells that a spreadsheet would run as formulas come out neutralized end to end (seeded rows →
API → worker → signed download). Oversized bodies get 413, huge batches, deep nesting and
megabyte strings get one bounded error, and the API process's memory stays bounded throughout.
"""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import pytest
from psycopg.types.json import Jsonb

from tests.support.abuse import ServedApi, assert_no_leak, assert_reply, json_body
from tests.support.exports import run_export
from tests.support.world import new_project

MIB = 1024 * 1024
FORMULAS = [
    "=SUM(A1:A9)",
    "+1+1",
    "-2+3",
    "@cmd",
    "\t=HIDDEN()",
    "\r=CR()",
    '=HYPERLINK("http://x","y")',
    "=cmd|' /C calc'!A0",
    "-",
    "+",
    "@",
    "=",
    "\t",
    "\r",
]


def test_formula_cells_are_neutralized_in_the_downloaded_csv(abuse_client, conn, tmp_path, awkward_values):
    project = new_project(conn, "formulas")
    token = project.member("OWNER")
    values = FORMULAS + [s for s in awkward_values["strings"] if s[:1] in ("=", "+", "-", "@", "\t", "\r")]
    for i, value in enumerate(values):
        conn.execute(
            """INSERT INTO traces (id, project_id, timestamp, name, user_id, session_id, release, version, tags, metadata)
               VALUES (%s, %s, now() - interval '1 minute', %s, %s, %s, %s, %s, %s, %s)""",
            (f"f-{i:02d}", project.id, value, value, value, value, value, [value], Jsonb({"k": value})),
        )
    export = abuse_client.result(
        "batchExport.create",
        {"projectId": project.id, "name": "=formulas", "format": "CSV", "query": {"tableName": "traces"}},
        token=token,
    )
    assert run_export(conn, export["id"], tmp_path)["status"] == "COMPLETED"
    link = abuse_client.result(
        "batchExport.downloadUrl", {"projectId": project.id, "batchExportId": export["id"]}, token=token
    )
    data = httpx.get(link["url"], timeout=30).content.decode("utf-8")
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(data, newline=""))}
    assert len(rows) == len(values)
    for i, value in enumerate(values):
        row = rows[f"f-{i:02d}"]
        for column in ("name", "userId", "sessionId", "release", "version"):
            assert row[column] == "'" + value, (column, value, row[column])
        # Nested values are JSON text: they start with [ or {, which no spreadsheet evaluates.
        assert row["tags"] == json.dumps([value]) and json.loads(row["metadata"]) == {"k": value}
    for record in csv.reader(io.StringIO(data, newline="")):
        for cell in record:
            assert cell[:1] not in ("=", "+", "@", "\t", "\r") and not (cell[:1] == "-" and not _number(cell)), cell


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# --- expensive requests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def owner(module_conn) -> dict:
    project = new_project(module_conn, "payloads")
    return {"project": project.id, "token": project.member("OWNER")}


def _post(api: ServedApi, body: bytes, token: str | None, **kwargs) -> httpx.Response:
    started = time.monotonic()
    response = api.post(body, token=token, timeout=60, **kwargs)
    assert time.monotonic() - started < 30, "the server took more than 30 s to refuse a payload"
    assert_no_leak(response.text, body, api.secrets)
    # No amplification: a reply is never much bigger than the request that caused it.
    assert len(response.content) <= len(body) + 16 * 1024, (len(response.content), len(body))
    return response


def _single_error(response: httpx.Response, code: str) -> dict:
    assert response.status_code == 200, response.text[:500]
    reply = response.json()
    assert_reply(reply)
    assert reply["error"]["data"]["code"] == code, reply
    return reply["error"]


def _create(owner: dict, **overrides) -> dict:
    params = {"projectId": owner["project"], "name": "big", "format": "CSV", "query": {"tableName": "traces"}}
    params.update(overrides)
    return {"jsonrpc": "2.0", "id": 1, "method": "batchExport.create", "params": params}


def test_a_body_over_one_mebibyte_is_413(abuse_api, owner):
    padding = "x" * MIB
    body = json_body(_create(owner, name=padding))
    response = _post(abuse_api, body, owner["token"])
    assert response.status_code == 413
    assert response.json()["error"]["data"]["code"] == "PAYLOAD_TOO_LARGE"

    def chunks():
        for _ in range(20):
            yield b" " * (MIB // 8)

    chunked = httpx.post(
        f"{abuse_api.url}/rpc", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert chunked.status_code == 413


def test_a_batch_of_ten_thousand_members_is_one_bad_request(abuse_api, owner):
    member = {"jsonrpc": "2.0", "id": 1, "method": "batchExport.all", "params": {"projectId": "p"}}
    for batch in ([member] * 10_000, [{k: v for k, v in member.items() if k != "id"}] * 10_000):
        body = json_body(batch)
        assert len(body) < MIB
        response = _post(abuse_api, body, owner["token"])
        reply = response.json()
        assert isinstance(reply, dict), "a refused batch is one error, not ten thousand"
        assert_reply(reply, request_id=None)
        assert reply["error"]["data"]["code"] == "BAD_REQUEST" and "50" in reply["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=["unclosed", "balanced arrays", "balanced objects"],
)
def test_json_nested_a_hundred_thousand_deep_is_a_parse_error(abuse_api, owner, body):
    _single_error(_post(abuse_api, body, owner["token"]), "PARSE_ERROR")


def test_deep_nesting_inside_params_is_bad_request(abuse_api, owner):
    nested = "[" * 900 + "]" * 900
    body = json.dumps(_create(owner)).replace('"traces"}', f'"traces", "filter": {nested}}}').encode()
    _single_error(_post(abuse_api, body, owner["token"]), "BAD_REQUEST")
    body = json.dumps(_create(owner)).replace('"name": "big"', f'"name": "big", "extra": {nested}').encode()
    _single_error(_post(abuse_api, body, owner["token"]), "BAD_REQUEST")


MEGA = "\u00e9" * 500_000  # one megabyte of UTF-8


@pytest.mark.parametrize(
    "where", ["name", "projectId", "searchQuery", "filter value", "filter column", "orderBy", "method", "token"]
)
def test_a_megabyte_string_anywhere_is_one_bounded_error(abuse_api, owner, where):
    request = _create(owner)
    token = owner["token"]
    expected = "BAD_REQUEST"
    if where in ("name", "projectId"):
        request["params"][where] = MEGA
    elif where == "searchQuery":
        request["params"]["query"]["searchQuery"] = MEGA
    elif where == "filter value":
        request["params"]["query"]["filter"] = [{"column": "name", "type": "string", "operator": "=", "value": MEGA}]
    elif where == "filter column":
        request["params"]["query"]["filter"] = [{"column": MEGA, "type": "string", "operator": "=", "value": "x"}]
    elif where == "orderBy":
        request["params"]["query"]["orderBy"] = {"column": MEGA, "order": "ASC"}
    elif where == "method":
        request["method"] = MEGA
        expected = "NOT_FOUND"
    else:
        token, expected = "bx_" + "a" * 1_000_000, "UNAUTHORIZED"
    response = _post(abuse_api, json_body(request), token)
    if where == "token":
        # An oversized header is the HTTP server's to refuse; a JSON-RPC error is fine too.
        assert response.status_code in (200, 400, 413, 431), response.status_code
        if response.status_code == 200:
            _single_error(response, expected)
        return
    _single_error(response, expected)


@pytest.mark.parametrize("shape", ["50 filters x 999 wrong options", "60,000 unknown keys"])
def test_params_wrong_in_tens_of_thousands_of_places_get_a_small_reply(abuse_api, owner, shape):
    if shape.startswith("50"):
        request = _create(
            owner,
            query={
                "tableName": "traces",
                "filter": [{"column": "name", "type": "stringOptions", "operator": "any of", "value": [0] * 999}] * 50,
            },
        )
    else:
        request = _create(owner)
        request["params"]["query"].update({f"x{i}": 0 for i in range(60_000)})
    body = json_body(request)
    response = _post(abuse_api, body, owner["token"])
    assert len(response.content) < 16 * 1024, len(response.content)
    error = _single_error(response, "BAD_REQUEST")
    assert 1 <= len(error["data"]["issues"]) <= 20
    assert "more)" in error["message"]


def test_memory_stays_bounded_under_expensive_requests(abuse_api, owner):
    """A burst of the worst payloads above, in batches; the API's peak RSS grows by a bounded amount."""
    abuse_api.reset_peak_memory()
    baseline = abuse_api.memory_kib()
    bad_options = _create(
        owner,
        query={
            "tableName": "traces",
            "filter": [{"column": "name", "type": "stringOptions", "operator": "any of", "value": [0] * 999}] * 50,
        },
    )
    extra_keys = _create(owner)
    extra_keys["params"]["query"].update({f"x{i}": 0 for i in range(60_000)})
    payloads = [
        json_body([bad_options] * 9),
        json_body(extra_keys),
        json_body(_create(owner, name=MEGA)),
        b"[" * 500_000,
        json_body([{"jsonrpc": "2.0", "id": 1, "method": "batchExport.all", "params": {"projectId": "p"}}] * 10_000),
    ]
    for _ in range(3):
        for body in payloads:
            assert len(body) <= MIB, len(body)
            response = _post(abuse_api, body, owner["token"])
            assert response.status_code == 200
    peak_growth_mib = (abuse_api.memory_kib("VmHWM") - baseline) / 1024
    settled_growth_mib = (abuse_api.memory_kib() - baseline) / 1024
    # Generous bounds: Python's allocator keeps some memory, but no payload may cost hundreds of MB.
    assert peak_growth_mib < 150, f"peak RSS grew by {peak_growth_mib:.0f} MiB"
    assert settled_growth_mib < 60, f"RSS stayed {settled_growth_mib:.0f} MiB above its baseline"
    assert abuse_api.healthy()
