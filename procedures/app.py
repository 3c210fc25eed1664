"""The Starlette app (`procedures.app:app`): the JSON-RPC endpoint, health and readiness, and shared resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

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
from procedures.batch_export import batch_export_router, to_batch_export
from procedures.context import Context, ProjectAccess, Resources, bearer_token
from procedures.downloads import download_endpoint
from procedures.export_changes import ExportChangeFeed
from procedures.metrics import RpcCallMetrics, metrics_endpoint
from procedures.readiness import readiness_routes
from procedures.request_ids import RequestIds
from procedures.scheduled_export import scheduled_export_router
from procedures.streams import OpenStreams
from rpc import Router, RPCEndpoint
from schemas.settings import Settings, get_settings
from workers.logs import configure_logging
from workers.state_metrics import ServiceStateCollector
from workers.storage import open_storage

log = logging.getLogger(__name__)

API_TITLE = "batch-export"
API_VERSION = "0.1.0"
# The exports page, built by `make web`: index.html at `/`, its script, styles and table catalog under /static/.
WEB_ROOT = Path(__file__).resolve().parents[1] / "web" / "public"

# The table of every callable method: `batchExport.create`, `batchExport.all`, ...
app_router = rpc.router(batchExport=batch_export_router, scheduledExport=scheduled_export_router)


def build_resources(settings: Settings) -> Resources:
    """What every request of one process shares; `running(resources)` opens and closes it."""
    pool = db.create_pool(settings.DATABASE_URL)
    access_cache: AccessCache[ProjectAccess] = AccessCache(settings.SESSION_CACHE_SECONDS)
    return Resources(
        settings=settings,
        pool=pool,
        # Short socket timeouts: a dead Redis must cost a request a second, not hang it.
        redis=redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2),
        storage=open_storage(settings),
        access_cache=access_cache,
        export_changes=ExportChangeFeed(settings.DATABASE_URL, pool, to_batch_export),
        streams=OpenStreams(pool, access_cache, settings.SUBSCRIPTION_MAX_STREAMS_PER_USER),
    )


@contextlib.asynccontextmanager
async def running(resources: Resources) -> AsyncIterator[Resources]:
    """The resources open, with the listeners that keep them current (the access cache's, the exports'
    changes', the open streams' watch), for as long as the block runs: the app's lifespan, or a
    caller's (`create_caller(app_router, Context(resources, token))`)."""
    await resources.pool.open(wait=False)
    background = [
        asyncio.create_task(resources.access_cache.listen(resources.settings.DATABASE_URL)),
        asyncio.create_task(resources.export_changes.run()),
        asyncio.create_task(resources.streams.watch()),
    ]
    try:
        yield resources
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await resources.pool.close()
        resources.redis.close()


def create_app(settings: Settings | None = None, router: Router = app_router) -> Starlette:
    """The app serving `router` (the product's own by default; benchmarks pass theirs)."""
    settings = settings or get_settings()
    resources = build_resources(settings)
    service_state = ServiceStateCollector(settings.REDIS_URL, settings.DATABASE_URL)

    async def create_context(request: Request) -> Context:
        return Context(resources=resources, token=bearer_token(request))

    endpoint = RPCEndpoint(
        router,
        create_context,
        openrpc_info={"title": API_TITLE, "version": API_VERSION},
        observe=RpcCallMetrics(),
        heartbeat_seconds=settings.SUBSCRIPTION_HEARTBEAT_SECONDS,
        send_timeout_seconds=settings.SUBSCRIPTION_SEND_TIMEOUT_SECONDS,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with running(resources):
            loop = asyncio.get_running_loop()
            # From any thread: ends the open event streams (a program serving the app in a thread stops
            # it this way; a signal does it for `batch-export serve`).
            app.state.end_streams = lambda: loop.call_soon_threadsafe(endpoint.subscriptions.end_all)
            restore_signals = end_streams_on_signals(app.state.end_streams)
            try:
                yield
            finally:
                restore_signals()
                endpoint.subscriptions.end_all()
                service_state.close()

    routes = [
        *endpoint.routes("/rpc"),
        *readiness_routes(resources),
        Route("/metrics", metrics_endpoint(service_state), methods=["GET"]),
        Route("/exports/download", download_endpoint(resources), methods=["GET"]),
        *web_routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RequestIds)])
    app.state.resources = resources
    return app


def end_streams_on_signals(end_streams: Callable[[], object]) -> Callable[[], None]:
    """On SIGTERM or SIGINT, end the open event streams at once (their clients reconnect, to another API
    process) before uvicorn's own handler starts the drain, which open streams would otherwise hold up
    for the whole grace period. Returns what puts the previous handlers back. Signals reach only the
    main thread: an app served from another thread is stopped with `app.state.end_streams()` first."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(signum: int, frame: Any) -> None:
        log.info("%s: ending the open event streams", signal.Signals(signum).name)
        end_streams()
        handler = previous[signum]
        if callable(handler):
            handler(signum, frame)

    for signum in previous:
        signal.signal(signum, on_signal)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


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
