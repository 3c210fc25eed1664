"""The OpenRPC 1.2 document of a router, derived from its procedures' pydantic models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from .errors import ERROR_CODES
from .router import Router

OPENRPC_VERSION = "1.2.6"
REF_TEMPLATE = "#/components/schemas/{model}"
# OpenRPC has no subscriptions: a subscription's method carries this extension, and its `result` is
# the schema of each event (see _subscription and docs/API.md).
SUBSCRIPTION_EXTENSION = "x-subscription"


def _errors() -> list[dict[str, Any]]:
    # Derived from the one error table, so the document cannot drift from the endpoint.
    return [
        {
            "code": row.code,
            "message": row.message,
            "data": {"code": row.data_code, "httpStatus": row.http_status, "key": key},
        }
        for key, row in ERROR_CODES.items()
    ]


def _summary(handler: Any) -> str | None:
    doc = getattr(handler, "__doc__", None)
    return doc.strip().splitlines()[0] if doc and doc.strip() else None


def openrpc_document(router: Router, info: Mapping[str, Any]) -> dict[str, Any]:
    """Every procedure as an OpenRPC method, every model under components.schemas."""
    procedures = router.procedures
    # One schema generation for all models, so a model shared by many procedures is
    # defined once and referenced everywhere.
    inputs: list[tuple[tuple[str, str], Any, TypeAdapter[Any]]] = []
    for path, procedure in procedures.items():
        if procedure.input_model is not None:
            inputs.append(((path, "input"), "validation", TypeAdapter(procedure.input_model)))
        if procedure.output_type is not None:
            inputs.append(((path, "output"), "serialization", procedure.output_adapter))
    schemas_by_key, top = TypeAdapter.json_schemas(inputs, by_alias=True, ref_template=REF_TEMPLATE)
    components: dict[str, Any] = dict(top.get("$defs", {}))
    schemas = {key: schema for (key, _mode), schema in schemas_by_key.items()}

    errors = _errors()
    methods = []
    for path, procedure in procedures.items():
        params = []
        if procedure.input_model is not None:
            model_schema = _resolve(schemas[(path, "input")], components)
            required = set(model_schema.get("required", ()))
            for name, schema in model_schema.get("properties", {}).items():
                params.append({"name": name, "required": name in required, "schema": schema})
        result_schema = schemas[(path, "output")] if procedure.output_type is not None else {}
        method: dict[str, Any] = {
            "name": path,
            "paramStructure": "by-name",
            "params": params,
            "result": {"name": "result", "schema": result_schema},
            "errors": errors,
            "tags": [{"name": procedure.kind}],
        }
        if procedure.kind == "subscription":
            method["result"]["name"] = "event"
            method[SUBSCRIPTION_EXTENSION] = _subscription(path, [param["name"] for param in params])
        summary = _summary(procedure.handler)
        if summary:
            method["summary"] = summary
        methods.append(method)

    return {
        "openrpc": OPENRPC_VERSION,
        "info": dict(info),
        "methods": methods,
        "components": {"schemas": components},
    }


def _subscription(path: str, param_names: list[str]) -> dict[str, Any]:
    """How a subscription is served: the transport, each event's envelope, and how to resume."""
    served: dict[str, Any] = {
        "transport": "sse",
        "request": "POST with `Accept: text/event-stream` and this one request object (with an id)",
        "event": {
            "data": {
                "jsonrpc": "2.0",
                "method": path,
                "params": {"subscription": "<the request's id>", "result": "<the method's result schema>"},
            },
            "id": "the SSE id line of a resumable event; an id line alone is a checkpoint (no event)",
        },
        "heartbeatComment": ": heartbeat",
        "errorEvent": "event: error, its data a JSON-RPC error response; the stream's last event",
        "returnEvent": "event: return, its data a JSON-RPC response with result null; the stream's last event",
    }
    if "lastEventId" in param_names:
        served["resume"] = "send the last id seen as the Last-Event-ID header; it fills the `lastEventId` param"
    return served


def _resolve(schema: dict[str, Any], components: Mapping[str, Any]) -> dict[str, Any]:
    """Follow a top-level $ref into components.schemas (models are always referenced)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        resolved: dict[str, Any] = components[ref.rsplit("/", 1)[1]]
        return resolved
    return schema
