"""`create_caller(router, ctx)`: any procedure called in-process, as over HTTP (tRPC's createCaller).

    caller = create_caller(app_router, Context(resources=..., token=token))
    export = await caller.batchExport.create({"projectId": p, "name": "n", ...})   # a BatchExport
    events = await caller.batchExport.onChange({"projectId": p})                   # its middlewares ran
    async for event in events: ...

The input is validated by the procedure's input model (a dict, keyword arguments, or an instance of
the model), the middlewares run with `ctx` as the starting context, and the result is validated by
the output type and returned as that type's Python value (a model instance, not JSON). A refusal
raises the same `RPCError` the wire would carry; anything else a handler raises propagates as is,
so a test or a command sees the real exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter

from .errors import RPCError
from .invocation import CompiledProcedure, compile_procedure
from .procedure import Checkpoint, Tracked
from .router import Router


def create_caller(router: Router, ctx: Any) -> Caller:
    """A caller of every procedure of `router`, each call starting from `ctx`."""
    compiled = {path: compile_procedure(path, procedure) for path, procedure in router.procedures.items()}
    return Caller(compiled, ctx)


class Caller:
    """`caller.a.b(input)` calls the procedure "a.b"; `caller.call("a.b", input)` is the same call."""

    def __init__(self, procedures: Mapping[str, CompiledProcedure], ctx: Any, prefix: str = "") -> None:
        self._procedures = procedures
        self._ctx = ctx
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        path = f"{self._prefix}{name}"
        if path in self._procedures:
            compiled = self._procedures[path]

            async def call(input: Any = None, /, **params: Any) -> Any:
                return await self._run(compiled, input, params)

            call.__name__ = call.__qualname__ = path
            return call
        if any(known.startswith(f"{path}.") for known in self._procedures):
            return Caller(self._procedures, self._ctx, f"{path}.")
        raise AttributeError(f"no procedure or router named {path!r}")

    async def call(self, path: str, input: Any = None, /, **params: Any) -> Any:
        compiled = self._procedures.get(path)
        if compiled is None:
            raise RPCError("NOT_FOUND", f"No procedure named {path!r}")
        return await self._run(compiled, input, params)

    async def _run(self, compiled: CompiledProcedure, input: Any, params: dict[str, Any]) -> Any:
        if isinstance(input, BaseModel):
            named = input.model_dump(by_alias=True, exclude_unset=True)
        elif isinstance(input, Mapping):
            named = dict(input)
        elif input is None:
            named = {}
        else:
            raise TypeError(f"{compiled.path}: the input must be a mapping or a model instance, got {input!r}")
        named.update(params)
        result = await compiled.run(self._ctx, compiled.parse((), named))
        if compiled.kind == "subscription":
            return _validated_events(compiled.path, compiled.output, result)
        return _validated(compiled.path, compiled.output, result)


def _validated(path: str, output: TypeAdapter[Any], value: Any) -> Any:
    try:
        return output.validate_python(value)
    except Exception as exc:
        raise RPCError(
            "INTERNAL_SERVER_ERROR", f"{path} returned a value that does not match its output type: {exc}"
        ) from exc


async def _validated_events(path: str, output: TypeAdapter[Any], events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """The subscription's events, each validated; a tracked event stays tracked (its id is kept), and
    checkpoints (no event, only an id for a reconnecting stream) are left out."""
    try:
        async for event in events:
            if type(event) is Checkpoint:
                continue
            if type(event) is Tracked:
                yield Tracked(event.id, _validated(path, output, event.data))
            else:
                yield _validated(path, output, event)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
