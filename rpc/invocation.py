"""How one call runs: params -> input model -> middlewares -> handler -> output model.

`compile_procedure` builds, once, what every call of a procedure at its path needs: the
middleware chain, the params parser and the output adapter. `compile_method` turns a query or
mutation into a jsonrpcserver method (whose per-call signature check is bound once); the SSE
transport (subscriptions.py) and `create_caller` (caller.py) run the same compiled procedure.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from jsonrpcserver import Error, Result, Success
from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import RPCError, error_object, invalid_params, validation_issues
from .procedure import Call, Procedure
from .protocol import EncodedResult

logger = logging.getLogger(__name__)

# jsonrpcserver calls methods as method(context, *list_params, **dict_params).
# The context is positional-only so that an input field named "ctx" is still a param.
Method = Callable[..., Awaitable[Result]]
# Told of every call once it is answered: the method (None when the request names no procedure of
# the router: an unknown method, or no request object at all), the ERROR_CODES key of its error (None
# when it succeeded) and the seconds it took. Called on the event loop for every call, so it must be
# cheap and must not raise; metrics are its purpose (the application counts calls with it).
CallObserver = Callable[[str | None, str | None, float], None]
_Parse = Callable[[tuple[Any, ...], dict[str, Any]], Any]
_Step = Callable[[Any, Any], Awaitable[Any]]


async def _method_shape(ctx: Any, /, *args: Any, **params: Any) -> Result: ...


class _AcceptsAnyParams(inspect.Signature):
    """The signature of every compiled method, `(ctx, /, *args, **params)`, bound once.

    jsonrpcserver binds each request's params against the method's signature before calling it,
    to answer a mismatch with Invalid Params. Ours take whatever params a request carries (the
    input model judges them, with better messages), and jsonrpcserver always passes the context
    first, so no request can fail that binding: the bound arguments are computed once, here, and
    every call reuses them instead of redoing the binding.
    """

    __slots__ = ()

    def bind(self, /, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
        return _BOUND_ONCE


METHOD_SIGNATURE = _AcceptsAnyParams.from_callable(_method_shape)
_BOUND_ONCE = inspect.Signature.bind(METHOD_SIGNATURE, None)


def error_result(error: dict[str, Any]) -> Result:
    """A jsonrpcserver error result carrying one of our wire error objects."""
    return Error(error["code"], error["message"], error["data"])


def unexpected_error(path: str | None, what: str) -> dict[str, Any]:
    """Log the exception being handled; the generic, traceable error object to send.

    Must be called from an `except` block. The caller gets only the request id: the
    exception text may hold SQL, file paths or secrets.
    """
    request_id = uuid.uuid4().hex
    logger.exception("%s %s [requestId=%s]", path or "<request>", what, request_id)
    return error_object("INTERNAL_SERVER_ERROR", None, path, {"requestId": request_id})


def as_method(function: Callable[..., Awaitable[Result]]) -> Method:
    """Mark `function` (shaped like `_method_shape`) with the precomputed signature."""
    function.__signature__ = METHOD_SIGNATURE  # type: ignore[attr-defined]
    return function


def _param_names(model: type[BaseModel]) -> tuple[str, ...]:
    # The names a client sends: aliases where the model declares them.
    names = []
    for name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        names.append(alias or name)
    return tuple(names)


def _input_parser(model: type[BaseModel] | None) -> _Parse:
    if model is None:

        def parse_nothing(args: tuple[Any, ...], params: dict[str, Any]) -> None:
            if args or params:
                raise invalid_params(
                    [{"loc": [], "msg": "This procedure takes no params", "type": "unexpected_params"}]
                )
            return None

        return parse_nothing

    names = _param_names(model)
    validate = model.model_validate

    def parse(args: tuple[Any, ...], params: dict[str, Any]) -> Any:
        if args:
            # Positional params fill the model's fields in declaration order.
            if len(args) > len(names):
                raise invalid_params(
                    [
                        {
                            "loc": [len(names)],
                            "msg": f"Expected at most {len(names)} positional params, got {len(args)}",
                            "type": "too_many_params",
                        }
                    ]
                )
            params = dict(zip(names, args))
        try:
            return validate(params)
        except ValidationError as error:
            raise invalid_params(validation_issues(error), error.error_count()) from None

    return parse


def _chain(path: str, procedure: Procedure) -> _Step:
    """The middlewares wrapped around the handler, outermost first, built once."""
    assert procedure.handler is not None and procedure.kind is not None
    step: _Step
    if procedure.kind == "subscription" and inspect.isasyncgenfunction(procedure.handler):
        open_stream = procedure.handler

        async def step(ctx: Any, input: Any) -> Any:
            # The chain's result is the event iterator; the events flow once the endpoint pulls them.
            return open_stream(ctx, input)

    else:  # a query, a mutation, or a subscription whose handler returns its iterator once set up
        step = procedure.handler  # type: ignore[assignment]
    for middleware in reversed(procedure.middlewares):
        step = _link(middleware, step, path, procedure)
    return step


def _link(middleware: Callable[[Call], Awaitable[Any]], rest: _Step, path: str, procedure: Procedure) -> _Step:
    meta, kind = procedure.metadata, procedure.kind

    async def step(ctx: Any, input: Any) -> Any:
        return await middleware(Call(ctx, input, path, meta, kind, rest))  # type: ignore[arg-type]

    return step


@dataclasses.dataclass(frozen=True, slots=True)
class CompiledProcedure:
    """A procedure at its path, ready to run: built once, shared by every call over HTTP, SSE or a caller."""

    path: str
    procedure: Procedure
    parse: _Parse  # (positional params, by-name params) -> the validated input, or RPCError BAD_REQUEST
    run: _Step  # (ctx, input) -> the handler's result (a subscription: its event iterator)
    output: TypeAdapter[Any]

    @property
    def kind(self) -> str:
        assert self.procedure.kind is not None
        return self.procedure.kind

    @property
    def input_fields(self) -> frozenset[str]:
        model = self.procedure.input_model
        return frozenset(_param_names(model)) if model is not None else frozenset()


def compile_procedure(path: str, procedure: Procedure) -> CompiledProcedure:
    return CompiledProcedure(
        path, procedure, _input_parser(procedure.input_model), _chain(path, procedure), procedure.output_adapter
    )


def compile_method(compiled: CompiledProcedure, observe: CallObserver | None = None) -> Method:
    """The jsonrpcserver method for a query or mutation; `observe` is told of each call."""
    path, parse, run, output = compiled.path, compiled.parse, compiled.run, compiled.output

    async def answer(ctx: Any, args: tuple[Any, ...], params: dict[str, Any]) -> tuple[Result, str | None]:
        """The call's result, and the key of its error (None: it succeeded)."""
        try:
            result = await run(ctx, parse(args, params))
        except RPCError as error:
            return error_result(error.to_error_object(path)), error.code_key
        except Exception:
            return error_result(unexpected_error(path, "raised")), "INTERNAL_SERVER_ERROR"
        try:
            # A model instance passes through as is; a dict is validated into the model. Encoded here,
            # once, by the output type's own serializer (protocol.encode puts the bytes in the reply).
            return Success(EncodedResult(output.dump_json(output.validate_python(result), by_alias=True))), None
        except Exception:
            wrong = unexpected_error(path, "returned a value that does not match its output type")
            return error_result(wrong), "INTERNAL_SERVER_ERROR"

    if observe is None:

        async def method(ctx: Any, /, *args: Any, **params: Any) -> Result:
            return (await answer(ctx, args, params))[0]

    else:

        async def method(ctx: Any, /, *args: Any, **params: Any) -> Result:
            started = perf_counter()
            result, error = await answer(ctx, args, params)
            observe(path, error, perf_counter() - started)
            return result

    return as_method(method)


def wrong_transport_method(compiled: CompiledProcedure, observe: CallObserver | None = None) -> Method:
    """What a subscription answers over plain JSON-RPC: it needs a stream to send its events on."""
    message = f"{compiled.path} is a subscription: send it alone with `Accept: text/event-stream` to receive its events"

    async def method(ctx: Any, /, *args: Any, **params: Any) -> Result:
        if observe is not None:
            observe(compiled.path, "BAD_REQUEST", 0.0)
        return error_result(error_object("BAD_REQUEST", message, compiled.path))

    return as_method(method)


def not_found_method(path: str, observe: CallObserver | None = None) -> Method:
    """The method jsonrpcserver gets for a name no procedure has (told to `observe` as method None)."""

    async def method(ctx: Any, /, *args: Any, **params: Any) -> Result:
        if observe is not None:
            observe(None, "METHOD_NOT_FOUND", 0.0)
        return error_result(error_object("METHOD_NOT_FOUND", None, path))

    return as_method(method)
