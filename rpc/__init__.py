"""A small typed-RPC toolkit, the tRPC equivalent over JSON-RPC 2.0 (knows nothing about exports)."""

from .endpoint import rpc_routes
from .errors import ERROR_CODES, ErrorCode, RPCError
from .openrpc import openrpc_document
from .procedure import Call, Handler, Middleware, Procedure
from .root import RPC
from .router import Router

__all__ = [
    "ERROR_CODES",
    "RPC",
    "Call",
    "ErrorCode",
    "Handler",
    "Middleware",
    "Procedure",
    "RPCError",
    "Router",
    "openrpc_document",
    "rpc_routes",
]
