"""The OpenRPC document: served by rpc.discover and GET /rpc/openrpc.json, derived from the models."""

from __future__ import annotations

from rpc import ERROR_CODES


def test_discover_equals_the_served_document(call, client):
    assert call("rpc.discover")["result"] == client.get("/rpc/openrpc.json").json()


def test_document_has_version_info_methods_and_components(client):
    document = client.get("/rpc/openrpc.json").json()
    assert document["openrpc"].startswith("1.2")
    assert document["info"] == {"title": "rpc test service", "version": "1.0.0"}
    assert document["methods"] and document["components"]["schemas"]


def test_every_procedure_is_a_method_and_discover_is_not(client):
    names = {m["name"] for m in client.get("/rpc/openrpc.json").json()["methods"]}
    assert {"subtract", "whoami", "geometry.shapes.echo"} <= names
    assert "rpc.discover" not in names


def test_method_params_are_the_input_fields_by_name(client):
    methods = {m["name"]: m for m in client.get("/rpc/openrpc.json").json()["methods"]}
    subtract = methods["subtract"]
    assert subtract["paramStructure"] == "by-name"
    assert [(p["name"], p["required"], p["schema"]["type"]) for p in subtract["params"]] == [
        ("minuend", True, "integer"),
        ("subtrahend", True, "integer"),
    ]
    assert subtract["result"]["schema"] == {"type": "integer"}
    assert subtract["summary"] == "Subtract subtrahend from minuend."


def test_optional_fields_are_not_required(client):
    methods = {m["name"]: m for m in client.get("/rpc/openrpc.json").json()["methods"]}
    assert {p["name"]: p["required"] for p in methods["sum"]["params"]} == {"a": False, "b": False, "c": False}


def test_model_results_reference_components(client):
    document = client.get("/rpc/openrpc.json").json()
    methods = {m["name"]: m for m in document["methods"]}
    assert methods["whoami"]["result"]["schema"] == {"$ref": "#/components/schemas/Whoami"}
    assert "Whoami" in document["components"]["schemas"]
    assert set(document["components"]["schemas"]["Stamped"]["properties"]) == {"createdAt"}


def test_method_errors_come_from_the_error_table(client):
    method = client.get("/rpc/openrpc.json").json()["methods"][0]
    assert {(e["code"], e["data"]["code"], e["data"]["httpStatus"]) for e in method["errors"]} == {
        (row.code, row.data_code, row.http_status) for row in ERROR_CODES.values()
    }


def test_kind_is_a_tag(client):
    methods = {m["name"]: m for m in client.get("/rpc/openrpc.json").json()["methods"]}
    assert methods["subtract"]["tags"] == [{"name": "query"}]
    assert methods["update"]["tags"] == [{"name": "mutation"}]
