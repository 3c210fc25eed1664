"""A small typed-RPC toolkit, the tRPC equivalent over JSON-RPC 2.0 (knows nothing about exports).

    rpc = RPC(Context)
    authed = rpc.procedure.use(require_session)            # async def require_session(call): ...
    router = rpc.router(
        thing=rpc.router(
            get=authed.meta(scope="things:read").input(GetThing).output(Thing).query(get_thing),
        ),
    )                                                       # serves the method "thing.get"
    app = Starlette(routes=rpc_routes(router, create_context, openrpc_info={"title": "T", "version": "1"}))

Where things live: the builder in procedure.py, routers in router.py, one call's run in
invocation.py, the HTTP endpoint in endpoint.py, wire messages in protocol.py, the error
table in errors.py, the OpenRPC document in openrpc.py.
"""

from .endpoint import rpc_routes
from .errors import ERROR_CODES, ErrorCode, RPCError
from .invocation import CallObserver
from .openrpc import openrpc_document
from .procedure import Call, Handler, Middleware, Procedure
from .root import RPC
from .router import Router

__all__ = [
    "ERROR_CODES",
    "RPC",
    "Call",
    "CallObserver",
    "ErrorCode",
    "Handler",
    "Middleware",
    "Procedure",
    "RPCError",
    "Router",
    "openrpc_document",
    "rpc_routes",
]
