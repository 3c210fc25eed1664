"""A small typed-RPC toolkit, the tRPC equivalent over JSON-RPC 2.0 (knows nothing about exports).

    rpc = RPC(Context)
    authed = rpc.procedure.use(require_session)            # async def require_session(call): ...
    router = rpc.router(
        thing=rpc.router(
            get=authed.meta(scope="things:read").input(GetThing).output(Thing).query(get_thing),
        ),
    )                                                       # serves the method "thing.get"
    app = Starlette(routes=rpc_routes(router, create_context, openrpc_info={"title": "T", "version": "1"}))

    async def watch_thing(ctx, input):                      # an async generator: a subscription
        async for change in changes(input.id):
            yield tracked(str(change.seq), change.thing)    # an id a reconnecting client resumes after
    watch=authed.input(WatchThing).output(Thing).subscription(watch_thing)   # served as SSE

    caller = create_caller(router, ctx)                     # in-process, same validation and middlewares
    thing = await caller.thing.get({"id": "t1"})

Where things live: the builder in procedure.py, routers in router.py, one call's run in
invocation.py, the HTTP endpoint in endpoint.py, subscriptions' event streams in
subscriptions.py, in-process calls in caller.py, wire messages in protocol.py, the error
table in errors.py, the OpenRPC document in openrpc.py.
"""

from .caller import Caller, create_caller
from .endpoint import RPCEndpoint, rpc_routes
from .errors import ERROR_CODES, ErrorCode, RPCError
from .invocation import CallObserver
from .openrpc import openrpc_document
from .procedure import (
    Call,
    Checkpoint,
    Handler,
    Middleware,
    Procedure,
    SubscriptionHandler,
    Tracked,
    checkpoint,
    tracked,
)
from .root import RPC
from .router import Router

__all__ = [
    "ERROR_CODES",
    "RPC",
    "RPCEndpoint",
    "Call",
    "CallObserver",
    "Caller",
    "Checkpoint",
    "ErrorCode",
    "Handler",
    "Middleware",
    "Procedure",
    "RPCError",
    "Router",
    "SubscriptionHandler",
    "Tracked",
    "checkpoint",
    "create_caller",
    "openrpc_document",
    "rpc_routes",
    "tracked",
]
