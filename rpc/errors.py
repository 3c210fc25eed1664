"""The error type procedures raise, and the one table mapping its keys to wire codes.

Every error leaves the server as a JSON-RPC error object::

    {"code": <int>, "message": <str>,
     "data": {"code": "<data.code>", "httpStatus": <int>, "path": "<method>" | null, ...}}

``data.code`` is the tRPC key a client switches on; the numeric ``code`` is JSON-RPC's
own for protocol errors and tRPC's for the rest. Two tRPC keys mean two different
things depending on who raises them, so the protocol-only situations get keys of their
own that are *reported as* the tRPC key:

=====================  ======  ======================  ====  =====================================
key (``ERROR_CODES``)  code    data.code               http  raised by
=====================  ======  ======================  ====  =====================================
PARSE_ERROR            -32700  PARSE_ERROR             400   endpoint: body is not JSON
INVALID_REQUEST        -32600  BAD_REQUEST             400   endpoint: not a request object, empty
                                                             or oversized batch
METHOD_NOT_FOUND       -32601  NOT_FOUND               404   endpoint: unknown method
BAD_REQUEST            -32602  BAD_REQUEST             400   params fail the input model, or a
                                                             handler / middleware rejects them
UNAUTHORIZED           -32001  UNAUTHORIZED            401   application
FORBIDDEN              -32003  FORBIDDEN               403   application
NOT_FOUND              -32004  NOT_FOUND               404   application: a resource is missing
PRECONDITION_FAILED    -32012  PRECONDITION_FAILED     412   application
PAYLOAD_TOO_LARGE      -32013  PAYLOAD_TOO_LARGE       413   endpoint: body over the size limit
TOO_MANY_REQUESTS      -32029  TOO_MANY_REQUESTS       429   application
INTERNAL_SERVER_ERROR  -32603  INTERNAL_SERVER_ERROR   500   anything unexpected (logged)
=====================  ======  ======================  ====  =====================================

So ``RPCError("NOT_FOUND", ...)`` from a handler is -32004, an unknown method is -32601,
and both say ``data.code == "NOT_FOUND"``; ``RPCError("BAD_REQUEST", ...)`` is -32602,
the same as a failed input model, never the protocol's -32600.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import ValidationError


class ErrorCode(NamedTuple):
    """One row of the table: what the wire says for one error key."""

    code: int  # JSON-RPC error.code
    http_status: int  # data.httpStatus, for clients that think in HTTP
    data_code: str  # data.code, the tRPC key
    message: str  # used when nobody supplies a more specific message


ERROR_CODES: Mapping[str, ErrorCode] = {
    # Protocol errors: the messages are the JSON-RPC 2.0 specification's own.
    "PARSE_ERROR": ErrorCode(-32700, 400, "PARSE_ERROR", "Parse error"),
    "INVALID_REQUEST": ErrorCode(-32600, 400, "BAD_REQUEST", "Invalid Request"),
    "METHOD_NOT_FOUND": ErrorCode(-32601, 404, "NOT_FOUND", "Method not found"),
    "BAD_REQUEST": ErrorCode(-32602, 400, "BAD_REQUEST", "Invalid params"),
    # Application errors: tRPC's numeric codes.
    "UNAUTHORIZED": ErrorCode(-32001, 401, "UNAUTHORIZED", "Unauthorized"),
    "FORBIDDEN": ErrorCode(-32003, 403, "FORBIDDEN", "Forbidden"),
    "NOT_FOUND": ErrorCode(-32004, 404, "NOT_FOUND", "Not found"),
    "PRECONDITION_FAILED": ErrorCode(-32012, 412, "PRECONDITION_FAILED", "Precondition failed"),
    "PAYLOAD_TOO_LARGE": ErrorCode(-32013, 413, "PAYLOAD_TOO_LARGE", "Payload too large"),
    "TOO_MANY_REQUESTS": ErrorCode(-32029, 429, "TOO_MANY_REQUESTS", "Too many requests"),
    "INTERNAL_SERVER_ERROR": ErrorCode(-32603, 500, "INTERNAL_SERVER_ERROR", "Internal error"),
}

# jsonrpcserver reports its own failures by numeric code only; this is how we find the row.
_KEY_BY_NUMERIC_CODE: Mapping[int, str] = {row.code: key for key, row in ERROR_CODES.items()}


def error_object(
    key: str,
    message: str | None = None,
    path: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the wire error object for `key`; `extra` joins data but cannot override it."""
    row = ERROR_CODES[key]
    data: dict[str, Any] = {"code": row.data_code, "httpStatus": row.http_status, "path": path}
    if extra:
        for name, value in extra.items():
            data.setdefault(name, value)
    return {"code": row.code, "message": row.message if message is None else message, "data": data}


def key_for_numeric_code(code: int) -> str:
    """The table key for a numeric code; unknown codes are treated as internal errors."""
    return _KEY_BY_NUMERIC_CODE.get(code, "INTERNAL_SERVER_ERROR")


class RPCError(Exception):
    """Raised by a handler or middleware to send the caller a specific, expected error.

    The message is sent to the client verbatim, so it should be something a person can
    act on; anything else raised is logged and reported as a generic internal error.
    """

    def __init__(self, code_key: str, message: str, *, data: Mapping[str, Any] | None = None) -> None:
        if code_key not in ERROR_CODES:
            raise ValueError(f"unknown RPC error key {code_key!r}; expected one of {', '.join(ERROR_CODES)}")
        super().__init__(message)
        self.code_key = code_key
        self.message = message
        self.data: dict[str, Any] = dict(data) if data else {}

    def to_error_object(self, path: str | None) -> dict[str, Any]:
        return error_object(self.code_key, self.message, path, self.data)

    def __repr__(self) -> str:
        return f"RPCError({self.code_key!r}, {self.message!r})"


# At most this many issues go into a reply. One request can fail its model in a hundred thousand
# places (50 filters x 999 wrong options), and listing them all turned a 1 MiB request into a 50 MB
# reply and half a gigabyte of server memory.
MAX_ISSUES = 20


def validation_issues(error: ValidationError, limit: int = MAX_ISSUES) -> list[dict[str, Any]]:
    """The first `limit` of pydantic's errors, reduced to location, message and type.

    The offending input, pydantic's context and its docs URL are dropped: the caller
    already has the input, and echoing it back verbatim is how reflected content and
    internals leak into error bodies.
    """
    return [
        {"loc": list(issue["loc"]), "msg": issue["msg"], "type": issue["type"]}
        for issue in error.errors(include_url=False, include_context=False, include_input=False)[:limit]
    ]


def invalid_params(issues: list[dict[str, Any]], total: int | None = None) -> RPCError:
    """The BAD_REQUEST error for params that fail the input model, naming the first issue.

    `total` is how many issues there were in all, when `issues` holds only the first few.
    """
    first = issues[0]
    total = len(issues) if total is None else total
    where = ".".join(str(part) for part in first["loc"]) or "params"
    more = f" (and {total - 1} more)" if total > 1 else ""
    return RPCError("BAD_REQUEST", f"Invalid params: {where}: {first['msg']}{more}", data={"issues": issues})
