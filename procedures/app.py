"""The Starlette app (`procedures.app:app`): the JSON-RPC endpoint, health and readiness, and shared resources."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

import db
from procedures.access_cache import AccessCache
from procedures.auth import rpc
from procedures.batch_export import batch_export_router
from procedures.context import Context, ProjectAccess, Resources, bearer_token
from procedures.downloads import download_endpoint
from procedures.metrics import RpcCallMetrics, metrics_endpoint
from procedures.readiness import readiness_routes
from procedures.request_ids import RequestIds
from procedures.scheduled_export import scheduled_export_router
from rpc import Router, rpc_routes
from schemas.settings import Settings, get_settings
from workers.logs import configure_logging
from workers.state_metrics import ServiceStateCollector
from workers.storage import open_storage

API_TITLE = "batch-export"
API_VERSION = "0.1.0"
# The exports page, built by `make web`: index.html at `/`, its script, styles and table catalog under /static/.
WEB_ROOT = Path(__file__).resolve().parents[1] / "web" / "public"

# The table of every callable method: `batchExport.create`, `batchExport.all`, ...
app_router = rpc.router(batchExport=batch_export_router, scheduledExport=scheduled_export_router)


def create_app(settings: Settings | None = None, router: Router = app_router) -> Starlette:
    """The app serving `router` (the product's own by default; benchmarks pass theirs)."""
    settings = settings or get_settings()
    pool = db.create_pool(settings.DATABASE_URL)
    # Short socket timeouts: a dead Redis must cost a request a second, not hang it.
    redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    access_cache: AccessCache[ProjectAccess] = AccessCache(settings.SESSION_CACHE_SECONDS)
    resources = Resources(
        settings=settings, pool=pool, redis=redis_client, storage=open_storage(settings), access_cache=access_cache
    )

    service_state = ServiceStateCollector(settings.REDIS_URL, settings.DATABASE_URL)

    async def create_context(request: Request) -> Context:
        return Context(resources=resources, token=bearer_token(request))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pool.open(wait=False)
        listener = asyncio.create_task(access_cache.listen(settings.DATABASE_URL))
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await pool.close()
            redis_client.close()
            service_state.close()

    routes = [
        *rpc_routes(
            router,
            create_context,
            path="/rpc",
            openrpc_info={"title": API_TITLE, "version": API_VERSION},
            observe=RpcCallMetrics(),
        ),
        *readiness_routes(resources),
        Route("/metrics", metrics_endpoint(service_state), methods=["GET"]),
        Route("/exports/download", download_endpoint(resources), methods=["GET"]),
        *web_routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RequestIds)])
    app.state.resources = resources
    return app


def web_routes(root: Path = WEB_ROOT) -> list[BaseRoute]:
    """The exports page's two routes; none for an install that has no web/ folder (the API alone)."""
    if not (root / "index.html").is_file():
        return []

    async def page(request: Request) -> FileResponse:
        return FileResponse(root / "index.html", headers={"Cache-Control": "no-cache"})

    # Explicit paths, not a catch-all mount at `/`, so /rpc and /healthz keep their own 404 and 405 answers.
    return [Route("/", page, methods=["GET"]), Mount("/static", StaticFiles(directory=root), name="static")]


def __getattr__(name: str):
    # `procedures.app:app` for uvicorn, built on first use so importing this module reads no settings.
    # Logging is configured here too, for uvicorn started by hand (`uvicorn procedures.app:app`),
    # which has set up its own handlers by now; under `batch-export serve` this repeats the CLI's setup.
    if name == "app":
        settings = get_settings()
        configure_logging(settings)
        return create_app(settings)
    raise AttributeError(name)
