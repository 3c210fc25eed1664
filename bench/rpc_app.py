"""The servers the RPC benchmark drives with wrk (each run as one uvicorn process).

- `full_stack_app`: the product's stack: `rpc_routes` (JSON-RPC parsing, request check,
  jsonrpcserver dispatch), `procedures.auth.require_project_access` (session and role, with
  the product's access cache) with the product's pool, Redis and context, serving the product's `batchExport` router plus one
  benchmark-only procedure, `bench.ping`: a protected_project_procedure with a scope, an input
  model and an output model whose handler does nothing. It exists only here, never in the
  product router.
- `bare_app`: a bare Starlette endpoint answering the same JSON-RPC reply bytes.

    uvicorn --app-dir bench --factory rpc_app:full_stack_app
    uvicorn --app-dir bench --factory rpc_app:bare_app
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from procedures.app import create_app
from procedures.auth import protected_project_procedure, rpc
from procedures.batch_export import batch_export_router
from procedures.context import ProjectContext
from schemas.settings import get_settings


class Ping(BaseModel):
    projectId: str


class Pong(BaseModel):
    pong: bool
    projectId: str


async def ping(ctx: ProjectContext, input: Ping) -> Pong:
    return Pong(pong=True, projectId=ctx.project_id)


bench_router = rpc.router(
    bench=rpc.router(
        ping=protected_project_procedure.meta(scope="batchExports:read").input(Ping).output(Pong).query(ping)
    ),
    batchExport=batch_export_router,
)


def full_stack_app() -> Starlette:
    """procedures.app.create_app itself (resources, lifespan, endpoint), serving bench_router."""
    return create_app(get_settings(), router=bench_router)


def pong_reply(project_id: str) -> bytes:
    """The exact bytes the full stack answers bench.ping with (id 1)."""
    from rpc import protocol

    return protocol.encode(protocol.success(1, {"pong": True, "projectId": project_id}))


def bare_app() -> Starlette:
    import os

    body = pong_reply(os.environ["BENCH_PROJECT_ID"])

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Starlette(routes=[Route("/rpc", endpoint, methods=["POST"])])
