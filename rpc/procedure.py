"""The immutable procedure builder: middlewares, metadata, input and output models, handler."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, TypeAdapter

Kind = Literal["query", "mutation", "subscription"]

# A handler sees the (possibly middleware-enriched) context and the validated input.
Handler = Callable[[Any, Any], Awaitable[Any]]
# A subscription's handler: an async generator function of the same two arguments, yielding events;
# or an async function returning the events' async iterator, once what it sets up is in place.
SubscriptionHandler = Callable[[Any, Any], AsyncIterator[Any] | Awaitable[AsyncIterator[Any]]]
# What Call.next runs: the rest of the chain, given the context to hand on.
_Rest = Callable[[Any, Any], Awaitable[Any]]

_KEEP: Any = object()  # "next() was called without ctx": keep the current one
_NO_META: Mapping[str, Any] = MappingProxyType({})
_ANY_OUTPUT: TypeAdapter[Any] = TypeAdapter(Any)


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """What a middleware sees of one call, and the way on to the rest of the chain."""

    ctx: Any
    input: Any  # the validated input model instance, or None for a procedure without input
    path: str  # the dotted method name, e.g. "batchExport.create"
    meta: Mapping[str, Any]
    kind: Kind
    _rest: _Rest = dataclasses.field(repr=False, compare=False)

    async def next(self, ctx: Any = _KEEP) -> Any:
        """Run the remaining middlewares and the handler, with `ctx` if given."""
        return await self._rest(self.ctx if ctx is _KEEP else ctx, self.input)


Middleware = Callable[[Call], Awaitable[Any]]

Event = TypeVar("Event")


class Tracked(NamedTuple, Generic[Event]):
    """An event with an id (tRPC's `tracked()`): sent as the SSE `id:` line, so a client that reconnects
    sends it back as `Last-Event-ID`, and the subscription's `lastEventId` input resumes after it."""

    id: str
    data: Event


def _event_id(id: str) -> str:
    # The id goes into an SSE field line: a line break would end it, and a NUL makes clients ignore it.
    if "\n" in id or "\r" in id or "\x00" in id:
        raise ValueError(f"an event id cannot hold a line break or NUL, got {id!r}")
    return id


def tracked(id: str, data: Event) -> Tracked[Event]:
    """Yield `tracked(id, event)` from a subscription to give the event a resumable id."""
    return Tracked(_event_id(id), data)


class Checkpoint(NamedTuple):
    """A place to resume from, without an event: sent as an SSE `id:` line alone, which sets a client's
    last event id (so a reconnection resumes after it) and delivers nothing."""

    id: str


def checkpoint(id: str) -> Checkpoint:
    """Yield `checkpoint(id)` from a subscription (at its start, say) so that a client that loses the
    stream before the first event still resumes where it started, not from whenever it reconnects."""
    return Checkpoint(_event_id(id))


def _require_async(function: Any, role: str) -> None:
    # Caught at import time rather than as a confusing "object is not awaitable" per call.
    call = getattr(function, "__call__", None)  # noqa: B004 (the bound __call__ itself, to test it for a coroutine)
    if not (inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)):
        raise TypeError(f"a {role} must be an async function, got {function!r}")


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Procedure:
    """A procedure, or a builder for one: every method returns a new Procedure.

    Like tRPC's procedure builder, a partly built procedure (say, one with the session
    middleware) is a value that many procedures can start from without affecting each other.
    `.query()` / `.mutation()` / `.subscription()` finish it; a finished procedure cannot be extended.
    """

    middlewares: tuple[Middleware, ...] = ()
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _NO_META)
    input_model: type[BaseModel] | None = None
    output_type: Any = None  # None: the result is sent as the handler returned it
    output_adapter: TypeAdapter[Any] = _ANY_OUTPUT
    kind: Kind | None = None
    handler: Handler | SubscriptionHandler | None = None

    def use(self, middleware: Middleware) -> Procedure:
        """Append a middleware; middlewares run in the order they were added."""
        self._require_unfinished("use")
        _require_async(middleware, "middleware")
        return dataclasses.replace(self, middlewares=(*self.middlewares, middleware))

    def meta(self, **metadata: Any) -> Procedure:
        """Merge metadata (e.g. scope=...) that middlewares read as `call.meta`."""
        self._require_unfinished("meta")
        return dataclasses.replace(self, metadata=MappingProxyType({**self.metadata, **metadata}))

    def input(self, model: type[BaseModel]) -> Procedure:
        """Set the params model; by-name params are its fields (positional: in field order)."""
        self._require_unfinished("input")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"input must be a pydantic BaseModel subclass, got {model!r}")
        return dataclasses.replace(self, input_model=model)

    def output(self, output_type: Any) -> Procedure:
        """Set the result type: a pydantic model or anything pydantic's TypeAdapter accepts."""
        self._require_unfinished("output")
        # Built here, once, so no call ever pays for building a validator.
        return dataclasses.replace(self, output_type=output_type, output_adapter=TypeAdapter(output_type))

    def query(self, handler: Handler) -> Procedure:
        """Finish as a query: a call that reads."""
        return self._finish("query", handler)

    def mutation(self, handler: Handler) -> Procedure:
        """Finish as a mutation: a call that changes state."""
        return self._finish("mutation", handler)

    def subscription(self, handler: SubscriptionHandler) -> Procedure:
        """Finish as a subscription, served as server-sent events. `handler` is an async generator
        function yielding events (each validated by `.output()`; yield `tracked(id, event)` to make it
        resumable), or an async function returning the events' async iterator: what it awaits runs
        before the stream opens, so whatever it sets up (a subscription to a feed, say) is in place
        when the client sees the stream open, and an error it raises refuses the stream. Middlewares
        run once, when the stream opens: `call.next()` returns the event iterator, which a middleware
        may wrap (to end the stream when the caller loses access, say)."""
        self._require_unfinished("subscription")
        if not (inspect.isasyncgenfunction(handler) or inspect.iscoroutinefunction(handler)):
            raise TypeError(
                "a subscription handler must be an async generator function, or an async function returning"
                f" an async iterator; got {handler!r}"
            )
        return dataclasses.replace(self, kind="subscription", handler=handler)

    def _finish(self, kind: Kind, handler: Handler) -> Procedure:
        self._require_unfinished(kind)
        _require_async(handler, "handler")
        return dataclasses.replace(self, kind=kind, handler=handler)

    def _require_unfinished(self, method: str) -> None:
        if self.kind is not None:
            raise TypeError(
                f".{method}() on a finished {self.kind}: build on the procedure before"
                " .query()/.mutation()/.subscription()"
            )
