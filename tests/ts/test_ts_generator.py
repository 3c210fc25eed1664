"""rpc.typescript on a router of its own: the json-schema-to-typescript pitfalls it avoids."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from pydantic import BaseModel, ConfigDict

from rpc import RPC
from rpc.typescript import render_types
from tests.ts.client_package import CLIENT_DIR


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    pinned: bool = False
    at: datetime


class Saved(BaseModel):
    id: str
    note: Note


async def save(ctx, note: Note) -> Saved:  # never called: only the types matter here
    raise NotImplementedError


async def ping(ctx, _input) -> str:
    return "pong"


@pytest.fixture(scope="module")
def types_ts(node_modules) -> str:
    rpc = RPC()
    router = rpc.router(
        notes=rpc.router(save=rpc.procedure.input(Note).output(Saved).mutation(save)),
        ping=rpc.procedure.output(str).query(ping),
    )
    return render_types(router, CLIENT_DIR)


def interface(types_ts: str, name: str) -> str:
    match = re.search(rf"^export interface {name} \{{\n(.*?)^\}}", types_ts, re.M | re.S)
    assert match, f"no interface {name} in:\n{types_ts}"
    return match[1]


def test_a_field_with_a_default_is_optional_to_send_and_always_present_in_results(types_ts):
    assert "pinned?: boolean;" in interface(types_ts, "Note")
    assert "pinned: boolean;" in interface(types_ts, "NoteOutput")


def test_field_titles_make_no_type_aliases(types_ts):
    # pydantic titles every field ("Title", "Pinned", "At"); each would otherwise become `export type Pinned = boolean`.
    exported = re.findall(r"^export (?:type|interface) (\w+)", types_ts, re.M)
    assert sorted(exported) == sorted(
        [
            "AppRouter",
            "Note",
            "NoteOutput",
            "Saved",
            "RpcErrorCode",
            "RpcErrorNumericCode",
            "RpcErrorData",
            "ValidationIssue",
        ]
    )


def test_models_that_accept_extra_fields_get_no_index_signature(types_ts):
    assert "[k: string]" not in interface(types_ts, "Saved")


def test_datetimes_are_iso_strings(types_ts):
    assert "at: string;" in interface(types_ts, "Note")


def test_app_router_maps_each_dotted_name_to_input_output_and_kind(types_ts):
    router = interface(types_ts, "AppRouter")
    assert re.search(r'"notes\.save": \{\s*input: Note;\s*output: Saved;\s*kind: "mutation";\s*\}', router)
    assert re.search(r'ping: \{\s*input: void;\s*output: string;\s*kind: "query";\s*\}', router)
