"""How a call runs: input validation, middlewares and ctx, metadata, errors, output."""

from __future__ import annotations

import logging

import pytest

from rpc import ERROR_CODES

ADMIN = {"authorization": "Bearer admin"}


def test_middleware_enriches_ctx_for_the_handler(call):
    reply = call("whoami", headers={"authorization": "Bearer alice"})
    assert reply["result"]["user"] == "user-of-alice"


def test_middlewares_run_in_use_order(call):
    reply = call("whoami", headers=ADMIN)
    assert reply["result"]["trail"] == ["first", "second"]


def test_next_without_ctx_keeps_the_current_ctx(call):
    # require_scope calls next() bare; the user require_user added must survive it.
    reply = call("scoped", headers=ADMIN)
    assert reply["result"]["user"] == "user-of-admin"


def test_rpc_error_from_middleware_reaches_the_client(call):
    reply = call("whoami")
    assert reply["error"] == {
        "code": -32001,
        "message": "Send Authorization: Bearer <token>",
        "data": {"code": "UNAUTHORIZED", "httpStatus": 401, "path": "whoami"},
    }


def test_middleware_reads_procedure_meta(call):
    reply = call("scoped", headers={"authorization": "Bearer bob"})
    assert reply["error"]["code"] == -32003
    assert reply["error"]["message"] == "Needs scope things:write"
    assert reply["error"]["data"]["code"] == "FORBIDDEN"


def test_context_is_created_once_per_http_request(post_rpc):
    batch = [{"jsonrpc": "2.0", "method": "anonymous", "id": i} for i in range(3)]
    context_ids = {reply["result"]["context_id"] for reply in post_rpc(batch).json()}
    assert len(context_ids) == 1


def test_each_http_request_gets_a_fresh_context(call):
    assert call("anonymous")["result"]["context_id"] != call("anonymous")["result"]["context_id"]


@pytest.mark.parametrize("key", ["UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "PRECONDITION_FAILED", "TOO_MANY_REQUESTS"])
def test_application_error_key_maps_to_its_table_row(call, key):
    reply = call("raise_error", {"key": key, "message": "You can act on this"})
    code, http_status = ERROR_CODES[key].code, ERROR_CODES[key].http_status
    assert reply["error"] == {
        "code": code,
        "message": "You can act on this",
        "data": {"code": key, "httpStatus": http_status, "path": "raise_error", "hint": "from the handler"},
    }


def test_application_not_found_is_32004_not_method_not_found(call):
    assert call("raise_error", {"key": "NOT_FOUND", "message": "No such export"})["error"]["code"] == -32004


def test_application_bad_request_is_32602_like_invalid_params(call):
    error = call("raise_error", {"key": "BAD_REQUEST", "message": "Unknown column"})["error"]
    assert (error["code"], error["data"]["code"], error["data"]["httpStatus"]) == (-32602, "BAD_REQUEST", 400)


def test_invalid_params_list_issues_without_echoing_input(call):
    error = call("subtract", {"minuend": "<script>", "extra": 1})["error"]
    assert error["code"] == -32602
    assert error["data"]["code"] == "BAD_REQUEST"
    assert error["data"]["httpStatus"] == 400
    assert error["data"]["path"] == "subtract"
    assert error["data"]["issues"] == [
        {
            "loc": ["minuend"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        },
        {"loc": ["subtrahend"], "msg": "Field required", "type": "missing"},
    ]
    assert "<script>" not in str(error)


def test_too_many_positional_params_is_invalid_params(call):
    error = call("subtract", [1, 2, 3])["error"]
    assert error["code"] == -32602
    assert error["data"]["issues"][0]["type"] == "too_many_params"


def test_params_for_a_procedure_without_input_are_invalid(call):
    error = call("get_data", {"unexpected": True})["error"]
    assert error["code"] == -32602
    assert error["data"]["issues"][0]["type"] == "unexpected_params"


def test_empty_params_for_a_procedure_without_input_are_fine(call):
    assert call("get_data", {})["result"] == ["hello", 5]
    assert call("get_data", [])["result"] == ["hello", 5]


def test_unexpected_exception_is_a_generic_internal_error(call, caplog):
    with caplog.at_level(logging.ERROR):
        reply = call("explode")
    error = reply["error"]
    assert error["code"] == -32603
    assert error["message"] == "Internal error"
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["data"]["httpStatus"] == 500
    assert error["data"]["path"] == "explode"
    assert len(error["data"]["requestId"]) == 32
    assert set(error["data"]) == {"code", "httpStatus", "path", "requestId"}


def test_unexpected_exception_text_is_not_in_the_body(post_rpc):
    response = post_rpc({"jsonrpc": "2.0", "method": "explode", "id": 1})
    for leak in ("hunter2", "postgres", "RuntimeError", "Traceback"):
        assert leak not in response.text


def test_unexpected_exception_is_logged_with_its_request_id(call, caplog):
    with caplog.at_level(logging.ERROR):
        request_id = call("explode")["error"]["data"]["requestId"]
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])


def test_wrong_output_shape_is_an_internal_error_and_logged(call, caplog):
    with caplog.at_level(logging.ERROR):
        error = call("wrong_shape")["error"]
    assert error["code"] == -32603
    assert error["data"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "not a number" not in str(error)
    logged = [r for r in caplog.records if error["data"]["requestId"] in r.getMessage()]
    assert logged and "wrong_shape" in logged[0].getMessage()


def test_output_dict_is_validated_into_the_model(call):
    assert call("point_as_dict")["result"] == {"x": 1, "y": 2}


def test_output_is_serialized_by_alias(call):
    assert call("stamped")["result"] == {"createdAt": "2024-01-01T00:00:00Z"}


def test_nested_router_method_is_callable_by_dotted_name(call):
    assert call("geometry.shapes.echo", {"x": 3, "y": 4})["result"] == {"x": 3, "y": 4}


def test_router_name_prefix_alone_is_not_a_method(call):
    assert call("geometry.shapes")["error"]["code"] == -32601
