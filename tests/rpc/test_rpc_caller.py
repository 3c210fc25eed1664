"""create_caller: every procedure called in-process, with the input model, the middlewares and the output type."""

from __future__ import annotations

import asyncio

import pytest

from rpc import RPCError, Tracked, create_caller
from tests.rpc.conftest import Context, Point, Tick, Whoami, router


def caller_for(token: str | None = None):
    return create_caller(router, Context(context_id=99, token=token))


def test_a_query_returns_the_output_models_value():
    assert asyncio.run(caller_for().subtract({"minuend": 5, "subtrahend": 2})) == 3


def test_keyword_arguments_and_model_instances_are_inputs_too():
    caller = caller_for()
    assert asyncio.run(caller.subtract(minuend=5, subtrahend=3)) == 2
    echoed = asyncio.run(caller.geometry.shapes.echo(Point(x=1, y=2)))
    assert echoed == Point(x=1, y=2)
    assert asyncio.run(caller.call("geometry.shapes.echo", {"x": 3, "y": 4})) == Point(x=3, y=4)


def test_the_middlewares_run_with_the_callers_context():
    with pytest.raises(RPCError) as refused:
        asyncio.run(caller_for().whoami())
    assert refused.value.code_key == "UNAUTHORIZED"

    me = asyncio.run(caller_for("alice").whoami())
    assert me == Whoami(user="user-of-alice", context_id=99, trail=["first", "second"])


def test_params_that_fail_the_input_model_are_bad_request_with_issues():
    with pytest.raises(RPCError) as refused:
        asyncio.run(caller_for().subtract({"minuend": "three", "subtrahend": 1}))
    assert refused.value.code_key == "BAD_REQUEST"
    assert refused.value.data["issues"][0]["loc"] == ["minuend"]


def test_a_result_that_does_not_match_the_output_type_is_an_internal_error():
    with pytest.raises(RPCError) as refused:
        asyncio.run(caller_for().wrong_shape())
    assert refused.value.code_key == "INTERNAL_SERVER_ERROR"


def test_a_handlers_own_exception_reaches_the_caller_as_is():
    with pytest.raises(RuntimeError, match="hunter2"):
        asyncio.run(caller_for().explode())


def test_a_subscription_yields_its_validated_events_with_their_ids():
    async def collect() -> list[Tracked[Tick]]:
        events = await caller_for().ticks({"count": 3, "lastEventId": "1"})
        return [event async for event in events]

    assert asyncio.run(collect()) == [Tracked("2", Tick(n=2)), Tracked("3", Tick(n=3))]


def test_checkpoints_are_left_out_of_a_callers_events():
    async def collect() -> list:
        return [event async for event in await caller_for().checkpointed()]

    assert asyncio.run(collect()) == [Tracked("8", Tick(n=8))]


def test_a_subscription_refused_by_a_middleware_raises_before_any_event():
    with pytest.raises(RPCError) as refused:
        asyncio.run(caller_for().whoami_stream())
    assert refused.value.code_key == "UNAUTHORIZED"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="geometry.circles"):
        caller_for().geometry.circles  # noqa: B018
    with pytest.raises(RPCError) as refused:
        asyncio.run(caller_for().call("no.such"))
    assert refused.value.code_key == "NOT_FOUND"
