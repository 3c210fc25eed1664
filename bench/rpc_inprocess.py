"""The Python cost of one JSON-RPC call with no HTTP at all, for bench.ping: parse, dispatch (jsonrpcserver,
middlewares with an access-cache hit, pydantic models) and encode; the same call through the batch
path; and a whole request through the app's middleware and router, against bare Starlette's.

    .venv/bin/python bench/rpc_inprocess.py [--calls 20000] [--rounds 5] [--profile] [--no-metrics] [--no-save]

Needs no servers: the access cache is primed by hand, so no call reaches Postgres. Each call is
counted and timed by the app's metrics observer, as in the app; `--no-metrics` leaves it out, to
see what it costs. `make bench-rpc` runs this, then the same call over HTTP (rpc_throughput.py).

Target (issue 17): per-call Python overhead (parse + dispatch + encode) ≤ 50 µs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from datetime import UTC, datetime, timedelta

from harness import Report, median, table
from jsonrpcserver import async_dispatch_to_response
from jsonrpcserver.response import to_serializable_one
from rpc_app import bench_router
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from db import access
from procedures.access_cache import AccessCache
from procedures.context import Context, ProjectAccess, Resources
from procedures.metrics import RpcCallMetrics
from procedures.request_ids import RequestIds
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
        openrpc_info={"title": "bench", "version": "0"},
        observe=RpcCallMetrics() if metrics else None,
    )


async def calls(rpc: RPCEndpoint, n: int) -> None:
    for _ in range(n):
        replies = await rpc._dispatch(None, [protocol.parse(BODY)])  # type: ignore[arg-type]
        protocol.encode(replies[0])


async def batch_calls(rpc: RPCEndpoint, n: int) -> None:
    """The same call sent through the batch path (jsonrpcserver's async_dispatch and its gather)."""
    request = protocol.parse(BODY)
    for _ in range(n):
        replies = await async_dispatch_to_response(
            [request],
            rpc.methods,
            context=await rpc.create_context(None),
            deserializer=lambda m: m,
            validator=lambda m: m,
        )
        protocol.encode(to_serializable_one(replies[0]))


SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/rpc",
    "raw_path": b"/rpc",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 1),
    "server": ("127.0.0.1", 2),
}


async def requests(app, n: int) -> None:
    """Whole HTTP requests without the network: the ASGI app, its middleware and router, called as uvicorn does."""

    async def receive() -> dict:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict) -> None:
        pass

    for _ in range(n):
        await app({**SCOPE, "state": {}}, receive, send)


def apps(rpc: RPCEndpoint) -> tuple[Starlette, Starlette]:
    """The full stack as procedures/app.py builds it (RequestIds middleware, the rpc routes), and the bare
    Starlette endpoint answering the same bytes (bench/rpc_app.py's bare_app)."""
    full = Starlette(routes=rpc.routes("/rpc"), middleware=[Middleware(RequestIds)])
    reply = protocol.encode(protocol.success(1, {"pong": True, "projectId": "p1"}))

    async def bare_endpoint(request: Request) -> Response:
        return Response(reply, media_type="application/json")

    return full, Starlette(routes=[Route("/rpc", bare_endpoint, methods=["POST"])])


def timed(run, n: int) -> float:
    """µs per iteration of `run(n)` in a fresh event loop (after a warm-up)."""
    asyncio.run(run(1_000))
    started = time.perf_counter()
    asyncio.run(run(n))
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions by own time")
    parser.add_argument("--no-metrics", action="store_true", help="without the app's call observer (metrics)")
    parser.add_argument("--no-save", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    rpc = endpoint(metrics=not args.no_metrics)
    first = asyncio.run(rpc._dispatch(None, [protocol.parse(BODY)]))  # type: ignore[arg-type]
    assert "result" in first[0], first
    full, bare = apps(rpc)
    report = Report(f"RPC in process, bench.ping, {args.calls:,} calls a measure")
    measures = {
        "one call: parse + dispatch + encode": lambda n: calls(rpc, n),
        "the same call through the batch path (gather)": lambda n: batch_calls(rpc, n),
        "whole request in process, full stack": lambda n: requests(full, n),
        "whole request in process, bare Starlette": lambda n: requests(bare, n),
    }
    rounds: dict[str, list[float]] = {name: [] for name in measures}
    for round_no in range(args.rounds):
        for name, run in measures.items():
            rounds[name].append(timed(run, args.calls))
        print(f"round {round_no + 1}: " + ", ".join(f"{v[-1]:.1f}" for v in rounds.values()), flush=True)
    med = {name: median(values) for name, values in rounds.items()}
    names = list(measures)
    rows = [[name, f"{med[name]:.1f}", " / ".join(f"{v:.1f}" for v in rounds[name])] for name in names]
    report.add(table(["measure", "µs (median)", "rounds"], rows))
    per_call = med[names[0]]
    report.add(
        f"Medians of {args.rounds} rounds, the measures interleaved in each. No network and no server: the access"
        " cache is primed, so no call reaches Postgres; the app's metrics observer counts every call"
        + (" (left out: --no-metrics)" if args.no_metrics else "")
        + ". The batch path is jsonrpcserver's async_dispatch (its asyncio.gather), which a single request no"
        f" longer takes: {med[names[1]] / per_call:.2f}× the cost. A whole request in process costs"
        f" {med[names[2]] / med[names[3]]:.1f}× bare Starlette's.\n\n"
        f"Target (issue 17): per-call Python overhead ≤ 50 µs: **{per_call:.1f} µs**"
        f" ({'meets' if per_call <= 50 else 'MISSES'})."
    )
    if not args.no_save:
        report.save()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(asyncio.run, requests(full, min(args.calls, 5_000)))
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
