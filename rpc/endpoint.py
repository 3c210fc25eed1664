"""The Starlette endpoint: where a JSON-RPC request enters, and jsonrpcserver is made safe.

POST {path} reads the body (bounded), parses it, checks every request object and hands
the valid ones to jsonrpcserver's dispatcher with the per-request context. We parse and
check ourselves, instead of letting jsonrpcserver 5.0.9 do it, because it

- answers a batch with one bad member with a single error, not one reply per member;
- checks requests with jsonschema, about 150 µs each;
- puts str(exception) in error data, which can leak SQL, paths or secrets.

Its replies then pass through `_to_wire`, which keeps our error objects and replaces
any other error data with a generic error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from types import MappingProxyType
from typing import Any

from jsonrpcserver import Success, async_dispatch_to_response
from jsonrpcserver.async_dispatcher import dispatch_request
from jsonrpcserver.dispatcher import create_request, to_response
from jsonrpcserver.response import to_serializable_one
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import protocol
from .errors import RPCError, error_object, key_for_numeric_code
from .invocation import (
    CallObserver,
    Method,
    as_method,
    compile_method,
    compile_procedure,
    not_found_method,
    unexpected_error,
    wrong_transport_method,
)
from .openrpc import openrpc_document
from .router import Router
from .subscriptions import Subscriptions, wants_event_stream

CreateContext = Callable[[Request], Awaitable[Any]]

DISCOVER = "rpc.discover"
# The endpoint's limits and OpenRPC info unless told otherwise (DESIGN.md: bodies over 1 MiB get 413).
MAX_BODY_BYTES = 1_048_576
MAX_BATCH = 50
DEFAULT_OPENRPC_INFO: Mapping[str, Any] = MappingProxyType(
    {"title": "JSON-RPC API", "version": "0.0.0"}
)  # OpenRPC's service-discovery method name


class _MethodTable(dict[str, Method]):
    """The methods jsonrpcserver dispatches on; unknown names get our NOT_FOUND error.

    jsonrpcserver's own not-found reply carries the method name as bare data; answering
    through a method keeps every error in one shape.
    """

    def __init__(self, observe: CallObserver | None) -> None:
        super().__init__()
        self.observe = observe

    def __missing__(self, name: str) -> Method:
        return not_found_method(name, self.observe)


def _already_parsed(message: Any) -> Any:
    # We hand jsonrpcserver the parsed, checked requests (see the module docstring).
    return message


def _already_checked(message: Any) -> Any:
    return message


def _to_wire(response: Any) -> dict[str, Any]:
    """jsonrpcserver's response as a reply dict, with any error not built by us sanitised."""
    reply = to_serializable_one(response)
    assert isinstance(reply, dict), "one request, one reply"
    error = reply.get("error")
    if error is not None:
        data = error.get("data")
        if not (isinstance(data, dict) and "httpStatus" in data):
            # jsonrpcserver's own errors carry str(exception) or similar: never send that.
            reply["error"] = error_object(key_for_numeric_code(error["code"]))
    return reply


class JsonReply(Response):
    """A JSON body with its two headers: Starlette's Response, without the header assembly every reply
    would otherwise pay for (media type parameters, charset, the headers' own object)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]


def _json(reply: Any, status_code: int = 200) -> Response:
    return JsonReply(protocol.encode(reply), status_code)


class RPCEndpoint:
    """One router served over HTTP; built once, shared by every request."""

    def __init__(
        self,
        router: Router,
        create_context: CreateContext,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_batch: int = MAX_BATCH,
        openrpc_info: Mapping[str, Any] = DEFAULT_OPENRPC_INFO,
        observe: CallObserver | None = None,
        heartbeat_seconds: float = 15.0,
        send_timeout_seconds: float = 60.0,
    ) -> None:
        procedures = router.procedures
        reserved = [path for path in procedures if path == "rpc" or path.startswith("rpc.")]
        if reserved:
            # JSON-RPC 2.0 reserves "rpc." method names for the protocol itself.
            raise ValueError(f"method names starting with 'rpc.' are reserved: {reserved}")
        self.create_context = create_context
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.observe = observe
        self.document = openrpc_document(router, openrpc_info)
        self._document_body = protocol.encode(self.document)
        self.compiled = {path: compile_procedure(path, procedure) for path, procedure in procedures.items()}
        self.methods = _MethodTable(observe)
        for path, compiled in self.compiled.items():
            plain = compiled.kind != "subscription"
            self.methods[path] = (
                compile_method(compiled, observe) if plain else wrong_transport_method(compiled, observe)
            )
        self.subscriptions = Subscriptions(
            self.compiled,
            create_context,
            observe=observe,
            heartbeat_seconds=heartbeat_seconds,
            send_timeout_seconds=send_timeout_seconds,
        )
        document = self.document

        async def discover(ctx: Any, /, *args: Any, **params: Any) -> Any:
            if observe is not None:
                observe(DISCOVER, None, 0.0)
            return Success(document)

        self.methods[DISCOVER] = as_method(discover)

    def routes(self, path: str = "/rpc") -> list[Route]:
        """POST {path} (calls, batches, subscriptions) and GET {path}/openrpc.json."""
        return [
            # The endpoint itself, as an ASGI app: Starlette's per-request wrapper around a function
            # endpoint (exception handlers this endpoint never needs) costs every call.
            Route(path, self, methods=["POST"], name="rpc"),
            Route(f"{path}/openrpc.json", self.openrpc, methods=["GET"], name="rpc_openrpc"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.rpc(Request(scope, receive))
        await response(scope, receive, send)

    async def openrpc(self, request: Request) -> Response:
        """GET {path}/openrpc.json"""
        return Response(self._document_body, media_type="application/json")

    async def rpc(self, request: Request) -> Any:
        """POST {path}: one request, a batch, or notifications; or, as an event stream, a subscription."""
        started = perf_counter()
        body = await self._read_body(request)
        if body is None:
            self._refused("PAYLOAD_TOO_LARGE", started)
            too_large = error_object("PAYLOAD_TOO_LARGE", f"Request body exceeds {self.max_body_bytes} bytes")
            return _json(protocol.failure(None, too_large), status_code=413)
        try:
            message = protocol.parse(body)
        except protocol.ParseError:
            self._refused("PARSE_ERROR", started)
            if wants_event_stream(request):
                return self.subscriptions.refusal(error_object("PARSE_ERROR"))
            return _json(protocol.failure(None, error_object("PARSE_ERROR")))
        if wants_event_stream(request):
            return await self.subscriptions.open(request, message)

        if type(message) is not list:
            if not protocol.is_request(message):
                self._refused("INVALID_REQUEST", started)
                return _json(protocol.invalid_request(message))
            replies = await self._dispatch(request, [message])
            return _json(replies[0]) if replies else Response(status_code=204)

        if not message or len(message) > self.max_batch:
            self._refused("INVALID_REQUEST", started)
            if not message:
                return _json(protocol.invalid_request(None))
            reason = f"Invalid Request: a batch may hold at most {self.max_batch} requests"
            return _json(protocol.invalid_request(None, reason))
        valid = [protocol.is_request(member) for member in message]
        for ok in valid:
            if not ok:
                self._refused("INVALID_REQUEST", started)
        dispatched = iter(await self._dispatch(request, [m for m, ok in zip(message, valid) if ok]))
        # Back into the batch's order: one reply per member that is not a notification.
        replies = []
        for member, ok in zip(message, valid):
            if not ok:
                replies.append(protocol.invalid_request(member))
            elif not protocol.is_notification(member):
                replies.append(next(dispatched))
        return _json(replies) if replies else Response(status_code=204)

    async def _dispatch(self, request: Request, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run valid request objects; the replies of those that are not notifications, in order."""
        if not calls:
            return []
        started = perf_counter()
        try:
            ctx = await self.create_context(request)
        except RPCError as error:
            self._context_failed(calls, error.code_key, started)
            return [
                protocol.failure(call["id"], error.to_error_object(call["method"]))
                for call in calls
                if not protocol.is_notification(call)
            ]
        except Exception:
            internal = unexpected_error(None, "create_context raised")  # one logged id for all
            self._context_failed(calls, "INTERNAL_SERVER_ERROR", started)
            return [protocol.failure(call["id"], internal) for call in calls if not protocol.is_notification(call)]
        if len(calls) == 1:
            # One request: jsonrpcserver's own per-request dispatch and response types, without the
            # batch path's asyncio.gather (a task and three event-loop turns for nothing to overlap).
            call = create_request(calls[0])
            _, result = await dispatch_request(self.methods, ctx, call)
            return [] if protocol.is_notification(calls[0]) else [_to_wire(to_response(call, result))]
        replies = await async_dispatch_to_response(
            calls,  # type: ignore[arg-type]  # parsed already, see _already_parsed
            self.methods,
            context=ctx,
            deserializer=_already_parsed,
            validator=_already_checked,
            post_process=_to_wire,
        )
        return replies or []  # type: ignore[return-value]

    def _refused(self, key: str, started: float) -> None:
        """Tells the observer of a request refused before it named a method (too large, not JSON, not a request)."""
        if self.observe is not None:
            self.observe(None, key, perf_counter() - started)

    def _context_failed(self, calls: list[dict[str, Any]], key: str, started: float) -> None:
        if self.observe is not None:
            seconds = perf_counter() - started
            for call in calls:
                self.observe(call["method"] if call["method"] in self.methods else None, key, seconds)

    async def _read_body(self, request: Request) -> bytes | None:
        """The body, or None once it is known to exceed the limit (without reading the rest)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        # Content-Length may be absent (chunked) or lie, so count what actually arrives.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                return b"".join((*chunks, chunk)) if chunks else chunk
            chunks.append(chunk)


def rpc_routes(
    router: Router,
    create_context: CreateContext,
    *,
    path: str = "/rpc",
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch: int = MAX_BATCH,
    openrpc_info: Mapping[str, Any] = DEFAULT_OPENRPC_INFO,
    observe: CallObserver | None = None,
    heartbeat_seconds: float = 15.0,
    send_timeout_seconds: float = 60.0,
) -> list[Route]:
    """The Starlette routes serving `router`: POST {path} and GET {path}/openrpc.json.

    `create_context(request)` is awaited once per HTTP request (not per batch member)
    and its result is every handler's and middleware's starting ctx. `observe(method, error
    key or None, seconds)` is called once per call answered (see `CallObserver`): a batch
    member or notification is one call; a body that is too large, not JSON or not a
    request object is one call of method None; a subscription is one call, told when its stream
    opens or is refused. An app that must end its open streams (at shutdown) builds the
    `RPCEndpoint` itself and calls `endpoint.subscriptions.end_all()`.
    """
    endpoint = RPCEndpoint(
        router,
        create_context,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        openrpc_info=openrpc_info,
        observe=observe,
        heartbeat_seconds=heartbeat_seconds,
        send_timeout_seconds=send_timeout_seconds,
    )
    return endpoint.routes(path)
