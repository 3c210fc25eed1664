"""Subscriptions over server-sent events: one JSON-RPC request in, its events out as a stream.

`POST {path}` with `Accept: text/event-stream` and one request object (with an id) opens the
subscription of that name. The reply is `text/event-stream` (framed per the HTML standard's
"server-sent events"), always HTTP 200 once the body was read:

    : stream open                  <- a comment, so the client knows the stream is up

    id: 41                         <- the event's id, when the handler yielded tracked(id, event)
    data: {"jsonrpc":"2.0","method":"<method>","params":{"subscription":<request id>,"result":<event>}}

    id: 42                         <- a checkpoint(id): no event, only where to resume from

    : heartbeat                    <- every `heartbeat_seconds` without an event

    event: error                   <- the stream's last event, when it fails
    data: {"jsonrpc":"2.0","error":{<the usual error object>},"id":<request id>}

    event: return                  <- the stream's last event, when the handler has nothing more
    data: {"jsonrpc":"2.0","result":null,"id":<request id>}

A stream that simply ends, with neither, was closed by the server (it is shutting down): the
client reconnects, sending the last id it saw as `Last-Event-ID`; when the procedure's input has a
`lastEventId` field, the header fills it, and the handler resumes after that event.

Refusals (not a request, unknown method, not a subscription, bad params, the middlewares' errors)
arrive the same way, as the stream's one `event: error`. The events are pulled from the handler as
the client reads them: a slow reader slows the handler down (the server's socket buffer is the only
buffer here), it never makes the server hold events in memory without bound; and a reader that takes
nothing at all for `send_timeout_seconds` (60 s) is dropped, to resume with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from . import protocol
from .errors import RPCError, error_object
from .invocation import CallObserver, CompiledProcedure, unexpected_error
from .procedure import Checkpoint, Tracked

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
LAST_EVENT_ID_FIELD = "lastEventId"  # the input field a reconnecting client's Last-Event-ID fills

CreateContext = Callable[[Request], Awaitable[Any]]

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    # Neither a browser, nor a proxy (X-Accel-Buffering: nginx's switch) may keep events back.
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
_HEARTBEAT = b": heartbeat\n\n"


def wants_event_stream(request: Request) -> bool:
    """Whether the client asks for server-sent events (`Accept: text/event-stream`)."""
    return EVENT_STREAM in request.headers.get("accept", "")


class EventEncoder:
    """Validates a subscription's events against its output type and frames them as SSE `data:` lines.

    One event object is often sent to many streams at once (a change fanned out to every open page):
    the validated, encoded result of the last few objects is kept, so that work is done once per
    object, not once per stream.
    """

    CACHED = 256

    def __init__(self, path: str, output: TypeAdapter[Any]) -> None:
        self.path = path
        self.output = output
        self._method = protocol.encode(path)
        self._encoded: OrderedDict[int, tuple[Any, bytes]] = OrderedDict()

    def prefix(self, request_id: Any) -> bytes:
        """What precedes the event's JSON in every data line of the stream answering `request_id`."""
        return (
            b'{"jsonrpc":"2.0","method":'
            + self._method
            + b',"params":{"subscription":'
            + protocol.encode(request_id)
            + b',"result":'
        )

    def encode(self, data: Any) -> bytes:
        """The event as JSON; raises if it does not match the output type."""
        key = id(data)
        cached = self._encoded.get(key)
        if cached is not None and cached[0] is data:
            self._encoded.move_to_end(key)
            return cached[1]
        encoded = self.output.dump_json(self.output.validate_python(data), by_alias=True)
        # The object itself is kept with its bytes: its id cannot be reused while it is cached.
        self._encoded[key] = (data, encoded)
        if len(self._encoded) > self.CACHED:
            self._encoded.popitem(last=False)
        return encoded

    def frame(self, prefix: bytes, event: Any) -> bytes:
        if type(event) is Checkpoint:
            return b"id: " + event.id.encode() + b"\n\n"
        if type(event) is Tracked:
            return b"id: " + event.id.encode() + b"\ndata: " + prefix + self.encode(event.data) + b"}}\n\n"
        return b"data: " + prefix + self.encode(event) + b"}}\n\n"


def error_frame(request_id: Any, error: Mapping[str, Any]) -> bytes:
    return b"event: error\ndata: " + protocol.encode(protocol.failure(request_id, dict(error))) + b"\n\n"


def _return_frame(request_id: Any) -> bytes:
    return b"event: return\ndata: " + protocol.encode(protocol.success(request_id, None)) + b"\n\n"


class Subscriptions:
    """Serves an endpoint's subscription procedures as event streams, and knows every stream open."""

    def __init__(
        self,
        procedures: Mapping[str, CompiledProcedure],
        create_context: CreateContext,
        *,
        observe: CallObserver | None,
        heartbeat_seconds: float,
        send_timeout_seconds: float = 60.0,
    ) -> None:
        self.procedures = procedures
        self.encoders = {
            path: EventEncoder(path, compiled.output)
            for path, compiled in procedures.items()
            if compiled.kind == "subscription"
        }
        self.create_context = create_context
        self.observe = observe
        self.heartbeat_seconds = heartbeat_seconds
        self.send_timeout_seconds = send_timeout_seconds
        self.prelude = b": stream open\n\n"
        self.streams: set[EventStream] = set()
        self.ending = False

    def end_all(self) -> None:
        """Ends every open stream without a final event (so its client reconnects), and refuses new
        ones the same way: the process is shutting down, and open streams would hold up its drain."""
        self.ending = True
        for stream in list(self.streams):
            stream.end()

    def refusal(self, error: Mapping[str, Any]) -> EventStream:
        """A stream whose one event is `error`, for a body that holds no request to answer."""
        return EventStream(self, None, error=error)

    async def open(self, request: Request, message: Any) -> EventStream:
        """The stream answering `message`: its events, or the one error that refuses it."""
        started = perf_counter()
        if not protocol.is_request(message) or protocol.is_notification(message):
            reason = "Invalid Request: a subscription is one request object with an id, not a batch or a notification"
            return self._refused(None, protocol.readable_id(message), "INVALID_REQUEST", reason, started)
        request_id, path = message["id"], message["method"]
        compiled = self.procedures.get(path)
        if compiled is None:
            return self._refused(None, request_id, "METHOD_NOT_FOUND", None, started, path)
        if compiled.kind != "subscription":
            reason = f"{path} is a {compiled.kind}, not a subscription: call it without `Accept: text/event-stream`"
            return self._refused(path, request_id, "BAD_REQUEST", reason, started)

        params = message.get("params", {})
        args: tuple[Any, ...] = tuple(params) if type(params) is list else ()
        named: dict[str, Any] = params if type(params) is dict else {}
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is not None and LAST_EVENT_ID_FIELD in compiled.input_fields and not args:
            # A reconnecting client resumes where it was, whatever it first asked for.
            named = {**named, LAST_EVENT_ID_FIELD: last_event_id}
        try:
            ctx = await self.create_context(request)
            events = await compiled.run(ctx, compiled.parse(args, named))
        except RPCError as error:
            self._observed(path, error.code_key, started)
            return EventStream(self, request_id, error=error.to_error_object(path))
        except Exception:
            self._observed(path, "INTERNAL_SERVER_ERROR", started)
            return EventStream(self, request_id, error=unexpected_error(path, "could not open"))
        self._observed(path, None, started)
        encoder = self.encoders[path]
        return EventStream(self, request_id, events=events, encoder=encoder)

    def _refused(
        self,
        path: str | None,
        request_id: Any,
        key: str,
        message: str | None,
        started: float,
        error_path: str | None = None,
    ) -> EventStream:
        self._observed(path, key, started)
        return EventStream(self, request_id, error=error_object(key, message, path or error_path))

    def _observed(self, path: str | None, key: str | None, started: float) -> None:
        if self.observe is not None:
            self.observe(path, key, perf_counter() - started)


class _Stalled(Exception):
    """The client read nothing while a write waited for SEND_TIMEOUT_SECONDS."""


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream:
    """One subscription's response (an ASGI app): pulls its events one at a time, as the client reads."""

    def __init__(
        self,
        owner: Subscriptions,
        request_id: Any,
        *,
        events: AsyncIterator[Any] | None = None,
        encoder: EventEncoder | None = None,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        self.owner = owner
        self.request_id = request_id
        self.events = events
        self.encoder = encoder
        self.error = error
        self._ended: asyncio.Future[None] | None = None

    def end(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    async def __call__(self, scope: Scope, receive: Receive, send_now: Send) -> None:
        self._ended = asyncio.get_running_loop().create_future()
        self.owner.streams.add(self)
        disconnected = asyncio.ensure_future(_until_disconnect(receive))
        pending: asyncio.Future[Any] | None = None
        patience = self.owner.send_timeout_seconds

        async def send(message: Message) -> None:
            # A write waits while the client's socket is full; a client that takes nothing for this long
            # is dropped (it resumes with Last-Event-ID when it reads again), so it holds nothing here.
            try:
                async with asyncio.timeout(patience):
                    await send_now(message)
            except TimeoutError:
                raise _Stalled from None

        try:
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": self.owner.prelude, "more_body": True})
            if self.error is not None:
                last = error_frame(self.request_id, self.error)
            elif self.owner.ending:
                last = b""
            else:
                pending, last = await self._pump(send, disconnected)
            if not disconnected.done():
                await send({"type": "http.response.body", "body": last, "more_body": False})
        except OSError:
            pass  # the client went away while we were writing (uvicorn's ClientDisconnected)
        except _Stalled:
            log.info(
                "dropped a %s stream whose client read nothing for %g s", self.encoder and self.encoder.path, patience
            )
        finally:
            disconnected.cancel()
            self.owner.streams.discard(self)
            await self._close(pending)

    async def _pump(self, send: Send, disconnected: asyncio.Future[None]) -> tuple[asyncio.Future[Any] | None, bytes]:
        """Sends events until the handler ends, fails, or the stream is ended; returns what to send last."""
        assert self.events is not None and self.encoder is not None and self._ended is not None
        prefix = self.encoder.prefix(self.request_id)
        heartbeat = self.owner.heartbeat_seconds
        watched = (disconnected, self._ended)
        while True:
            pending = asyncio.ensure_future(anext(self.events))
            while not pending.done():
                done, _ = await asyncio.wait((pending, *watched), timeout=heartbeat, return_when="FIRST_COMPLETED")
                if disconnected in done or self._ended in done:
                    return pending, b""
                if not done:
                    await send({"type": "http.response.body", "body": _HEARTBEAT, "more_body": True})
            try:
                event = pending.result()
            except StopAsyncIteration:
                return None, _return_frame(self.request_id)
            except RPCError as error:
                return None, error_frame(self.request_id, error.to_error_object(self.encoder.path))
            except Exception:
                return None, error_frame(self.request_id, unexpected_error(self.encoder.path, "raised"))
            try:
                frame = self.encoder.frame(prefix, event)
            except Exception:
                wrong = unexpected_error(self.encoder.path, "yielded an event that does not match its output type")
                return None, error_frame(self.request_id, wrong)
            await send({"type": "http.response.body", "body": frame, "more_body": True})

    async def _close(self, pending: asyncio.Future[Any] | None) -> None:
        """Stops the handler: its `finally` blocks run (unsubscribing it from whatever feeds it)."""
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.wait((pending,))  # its outcome is of no interest; our own cancellation still is
        aclose = getattr(self.events, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:
                log.exception("closing the subscription %s failed", self.encoder.path if self.encoder else "?")
