"""The procedure builder and routers: immutable values, flattened to dotted names."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from rpc import RPC, Call, Procedure, Router, RPCError, rpc_routes


class Item(BaseModel):
    name: str


async def handler(ctx, params):
    return None


async def passthrough(call: Call):
    return await call.next()


rpc = RPC()


def test_builder_methods_return_new_procedures_and_leave_the_original_unchanged():
    base = rpc.procedure
    used = base.use(passthrough)
    described = used.meta(scope="things:read")
    typed = described.input(Item).output(Item)
    finished = typed.query(handler)

    assert base.middlewares == () and dict(base.metadata) == {} and base.input_model is None
    assert used.middlewares == (passthrough,) and dict(used.metadata) == {}
    assert described.input_model is None and described.output_type is None
    assert typed.kind is None and typed.handler is None
    assert (finished.kind, finished.handler, finished.input_model, finished.output_type) == (
        "query",
        handler,
        Item,
        Item,
    )
    assert len({id(p) for p in (base, used, described, typed, finished)}) == 5


def test_two_procedures_built_from_one_base_do_not_share_middlewares():
    base = rpc.procedure.use(passthrough)
    first = base.use(passthrough)
    second = base
    assert len(first.middlewares) == 2 and len(second.middlewares) == 1


def test_rpc_procedure_is_always_empty():
    rpc.procedure.use(passthrough).meta(a=1)
    assert rpc.procedure.middlewares == () and dict(rpc.procedure.metadata) == {}


def test_meta_merges():
    procedure = rpc.procedure.meta(scope="a", audit=True).meta(scope="b")
    assert dict(procedure.metadata) == {"scope": "b", "audit": True}


def test_meta_cannot_be_mutated_in_place():
    procedure = rpc.procedure.meta(scope="a")
    with pytest.raises(TypeError):
        procedure.metadata["scope"] = "b"  # type: ignore[index]


def test_procedure_attributes_cannot_be_reassigned():
    with pytest.raises(AttributeError):
        rpc.procedure.kind = "query"  # type: ignore[misc]


def test_query_and_mutation_set_the_kind():
    assert rpc.procedure.query(handler).kind == "query"
    assert rpc.procedure.mutation(handler).kind == "mutation"


def test_a_finished_procedure_cannot_be_extended():
    with pytest.raises(TypeError):
        rpc.procedure.query(handler).use(passthrough)


def test_input_must_be_a_pydantic_model():
    with pytest.raises(TypeError):
        rpc.procedure.input(dict)  # type: ignore[arg-type]


def test_sync_handler_is_rejected_at_build_time():
    with pytest.raises(TypeError):
        rpc.procedure.query(lambda ctx, params: None)


def test_nested_routers_flatten_to_dotted_names():
    leaf = rpc.procedure.query(handler)
    router = rpc.router(a=leaf, b=rpc.router(c=leaf, d=rpc.router(e=leaf)))
    assert isinstance(router, Router)
    assert set(router.procedures) == {"a", "b.c", "b.d.e"}
    assert all(isinstance(p, Procedure) for p in router.procedures.values())


def test_router_procedures_is_a_copy():
    router = rpc.router(a=rpc.procedure.query(handler))
    router.procedures.clear()
    assert set(router.procedures) == {"a"}


def test_router_rejects_an_unfinished_procedure():
    with pytest.raises(TypeError):
        rpc.router(a=rpc.procedure.input(Item))


def test_router_rejects_dotted_names():
    with pytest.raises(ValueError):
        Router(**{"a.b": rpc.procedure.query(handler)})


def test_rpc_method_names_are_reserved():
    async def create_context(request):
        return None

    with pytest.raises(ValueError):
        rpc_routes(rpc.router(rpc=rpc.router(discover=rpc.procedure.query(handler))), create_context)


def test_rpc_error_rejects_unknown_keys():
    with pytest.raises(ValueError):
        RPCError("TEAPOT", "short and stout")


def test_routes_are_post_rpc_and_get_openrpc_json():
    async def create_context(request):
        return None

    routes = rpc_routes(rpc.router(a=rpc.procedure.query(handler)), create_context, path="/api")
    assert [(r.path, sorted(r.methods or ())) for r in routes] == [
        ("/api", ["POST"]),
        ("/api/openrpc.json", ["GET", "HEAD"]),
    ]
