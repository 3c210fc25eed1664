"""The Python cost of one JSON-RPC call with no HTTP at all: parse, dispatch (jsonrpcserver,
middlewares with an access-cache hit, pydantic models) and encode, for bench.ping.

    .venv/bin/python bench/rpc_inprocess.py [--calls 20000] [--profile] [--no-metrics]

Needs no servers: the access cache is primed by hand, so no call reaches Postgres. Compare the
figure with bare Starlette's whole request in `make bench-rpc` (1 / its req/s). Each call is
counted and timed by the app's metrics observer, as in the app; `--no-metrics` leaves it out, to
see what it costs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from datetime import UTC, datetime, timedelta

from rpc_app import bench_router

from db import access
from procedures.access_cache import AccessCache
from procedures.context import Context, ProjectAccess, Resources
from procedures.metrics import RpcCallMetrics
from procedures.roles import ROLE_SCOPES
from rpc import protocol
from rpc.endpoint import RPCEndpoint

TOKEN = "bx_bench"
BODY = b'{"jsonrpc":"2.0","id":1,"method":"bench.ping","params":{"projectId":"p1"}}'


def endpoint(metrics: bool = True) -> RPCEndpoint:
    cache: AccessCache[ProjectAccess] = AccessCache(ttl_seconds=3600)
    cache.enabled = True  # as if its LISTEN connection were up
    resources = Resources(
        settings=None, pool=None, redis=None, storage=None, access_cache=cache, export_changes=None, streams=None
    )  # type: ignore[arg-type]
    expires = datetime.now(UTC) + timedelta(days=1)
    # The answer of db.access.ACCESS_SQL for a MEMBER of p1, as the first call would have cached it.
    row = {"id": "u1", "email": "bench@example.com", "name": None, "image": None, "project_id": "p1"}
    row |= {"org_id": "o1", "role": "MEMBER", "org_role": None, "project_role": "MEMBER", "session_expires_at": expires}
    answer = ProjectAccess.from_row(row, Context(resources=resources, token=TOKEN), ROLE_SCOPES["MEMBER"])
    cache.put((access.hash_token(TOKEN), "p1"), answer, cache.generation, valid_until=expires)

    async def create_context(request) -> Context:
        return Context(resources=resources, token=TOKEN)

    return RPCEndpoint(
        bench_router,
        create_context,
        max_body_bytes=2**20,
        max_batch=50,
        openrpc_info={"title": "bench", "version": "0"},
        observe=RpcCallMetrics() if metrics else None,
    )


async def calls(rpc: RPCEndpoint, n: int) -> None:
    for _ in range(n):
        replies = await rpc._dispatch(None, [protocol.parse(BODY)])  # type: ignore[arg-type]
        protocol.encode(replies[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions by own time")
    parser.add_argument("--no-metrics", action="store_true", help="without the app's call observer (metrics)")
    args = parser.parse_args()
    rpc = endpoint(metrics=not args.no_metrics)
    first = asyncio.run(rpc._dispatch(None, [protocol.parse(BODY)]))  # type: ignore[arg-type]
    assert "result" in first[0], first
    started = time.perf_counter()
    asyncio.run(calls(rpc, args.calls))
    print(
        f"{(time.perf_counter() - started) / args.calls * 1e6:.1f} µs per call (parse + dispatch + encode), {args.calls:,} calls"
    )
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, calls(rpc, min(args.calls, 5_000)))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
