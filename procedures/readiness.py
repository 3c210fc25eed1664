"""GET /healthz (the process lives) and GET /readyz (it can serve: its dependencies answer).

An orchestrator restarts a process whose /healthz fails and stops sending traffic to one whose
/readyz fails, so /healthz depends on nothing: an outage of Postgres must not restart every API
process. /readyz says which check failed and nothing more; why is in the log, by exception type
only, since an exception's text can hold a connection string.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
import redis
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from db.migrate import APPLIED_SQL, missing_migrations
from procedures.context import Resources

log = logging.getLogger(__name__)

# Each check gets this long; a dependency slower than that is not ready to serve either.
CHECK_TIMEOUT_SECONDS = 3


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def readiness_routes(resources: Resources) -> list[Route]:
    async def postgres_and_migrations() -> tuple[bool, bool]:
        try:
            async with resources.pool.connection(timeout=CHECK_TIMEOUT_SECONDS) as conn:
                await conn.execute("SELECT 1")
                try:
                    applied = [row["version"] for row in await (await conn.execute(APPLIED_SQL)).fetchall()]
                except psycopg.errors.UndefinedTable:
                    applied = []  # a database never migrated
        except Exception as exc:  # any failure means "not ready"
            log.warning("readyz: postgres unavailable: %s", type(exc).__name__)
            return False, False
        missing = missing_migrations(applied)
        if missing:
            log.warning("readyz: the database lacks migrations %s: run `batch-export migrate`", ", ".join(missing))
        return True, not missing

    def redis_answers() -> bool:
        try:
            return bool(resources.redis.ping())
        except redis.RedisError as exc:
            log.warning("readyz: redis unavailable: %s", type(exc).__name__)
            return False

    def storage_ready() -> bool:
        try:
            resources.storage.check_ready()
            return True
        except Exception as exc:
            log.warning("readyz: export storage unavailable: %s", type(exc).__name__)
            return False

    async def in_thread(check: Callable[[], bool], name: str) -> bool:
        # Redis and S3 clients block: in a thread, so a slow one never stalls other requests.
        try:
            return bool(await asyncio.wait_for(asyncio.to_thread(check), CHECK_TIMEOUT_SECONDS))
        except TimeoutError:
            log.warning("readyz: %s did not answer within %d s", name, CHECK_TIMEOUT_SECONDS)
            return False

    async def readyz(request: Request) -> JSONResponse:
        (postgres, migrations), redis_ok, storage = await asyncio.gather(
            postgres_and_migrations(), in_thread(redis_answers, "redis"), in_thread(storage_ready, "export storage")
        )
        checks = {"postgres": postgres, "redis": redis_ok, "storage": storage, "migrations": migrations}
        ok = all(checks.values())
        return JSONResponse({"ok": ok, **checks}, status_code=200 if ok else 503)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
