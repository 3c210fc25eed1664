"""create_caller on the product's router: the procedures in-process, through the same checks as over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from procedures.app import app_router, build_resources, running
from procedures.context import Context
from rpc import RPCError, create_caller
from schemas import BatchExport, CreateBatchExport
from tests.support.rpc_client import create_params


def call(settings, token: str | None, method: str, params):
    async def run():
        async with running(build_resources(settings)) as resources:
            return await create_caller(app_router, Context(resources=resources, token=token)).call(method, params)

    return asyncio.run(run())


def test_a_member_creates_an_export_and_gets_the_model_back(settings, project, redis_client):
    token = project.member("MEMBER")
    created = call(settings, token, "batchExport.create", create_params(project.id, name="in-process"))
    assert isinstance(created, BatchExport)
    assert (created.name, created.status, created.projectId) == ("in-process", "QUEUED", project.id)


def test_a_viewer_is_refused_by_the_same_middleware(settings, project, conn):
    with pytest.raises(RPCError) as refused:
        call(settings, project.member("VIEWER"), "batchExport.create", create_params(project.id))
    assert refused.value.code_key == "FORBIDDEN"
    assert "lacks the `batchExports:create` permission" in refused.value.message
    assert (
        conn.execute("SELECT count(*) AS n FROM batch_exports WHERE project_id = %s", (project.id,)).fetchone()["n"]
        == 0
    )


def test_no_session_is_unauthorized_and_bad_input_is_a_bad_request(settings, project):
    with pytest.raises(RPCError) as unauthorized:
        call(settings, None, "batchExport.all", {"projectId": project.id})
    assert unauthorized.value.code_key == "UNAUTHORIZED"

    with pytest.raises(RPCError) as bad:
        call(settings, project.member("OWNER"), "batchExport.create", {**create_params(project.id), "format": "XLS"})
    assert bad.value.code_key == "BAD_REQUEST"
    assert bad.value.data["issues"][0]["loc"] == ["format"]


def test_a_model_instance_is_an_input_too(settings, project, redis_client):
    params = CreateBatchExport.model_validate(create_params(project.id, name="from a model"))
    created = call(settings, project.member("OWNER"), "batchExport.create", params)
    assert created.name == "from a model"
