"""The API's Prometheus metrics: RPC calls and their latency, exports created and cancelled, and GET /metrics.

Under several uvicorn processes (`batch-export serve --workers N`) each process writes its counters
into files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode) and a scrape of any
process sums them all; one process keeps them in memory. The state of the whole service (queue,
workers, active exports) is read at scrape time by workers.state_metrics.ServiceStateCollector.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from workers.metrics import Collectors, exports_finished_counter
from workers.state_metrics import ServiceStateCollector

# The label of calls that named no method of ours (unknown names, bodies that are not requests).
NO_METHOD = "(none)"
# The `code` label of a call that succeeded; the others are the keys of rpc.errors.ERROR_CODES.
SUCCESS = "OK"
# From a sub-millisecond cache hit to a create that waits on Postgres and Redis.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RPC_CALLS = Counter("batch_export_rpc_calls", "JSON-RPC calls answered, by method and error code", ["method", "code"])
RPC_DURATION = Histogram(
    "batch_export_rpc_duration_seconds",
    "Seconds from a call's dispatch to its answer, by method",
    ["method"],
    buckets=LATENCY_BUCKETS,
)
EXPORTS_CREATED = Counter("batch_export_exports_created", "Exports created (QUEUED)", ["table", "format"])
EXPORTS_FINISHED = exports_finished_counter(REGISTRY)
# Live streams (batchExport.onChange): summed over the API processes that are alive.
EVENT_STREAMS = Gauge("batch_export_event_streams", "Subscription event streams open", multiprocess_mode="livesum")
EXPORT_CHANGES = Counter(
    "batch_export_export_changes", "Export changes the API's listener read and offered to the streams following them"
)
STREAM_REPLAYS = Counter(
    "batch_export_stream_replays",
    "Times a stream read the changes log: it started, resumed, fell behind, or its listener reconnected",
)


class RpcCallMetrics:
    """The rpc endpoint's CallObserver: counts each call and times it.

    Looking a labelled child up in prometheus_client takes a lock and validates the labels; each
    (method, code) pair's children are kept here after their first call, so a call costs two dict
    lookups and two increments (bench/rpc_inprocess.py measures it). The pairs are bounded: the
    endpoint reports unknown method names as None.
    """

    def __init__(self) -> None:
        self._children: dict[tuple[str | None, str | None], tuple[Counter, Histogram]] = {}

    def __call__(self, method: str | None, error: str | None, seconds: float) -> None:
        children = self._children.get((method, error))
        if children is None:
            label = method or NO_METHOD
            children = RPC_CALLS.labels(label, error or SUCCESS), RPC_DURATION.labels(label)
            self._children[(method, error)] = children
        children[0].inc()
        children[1].observe(seconds)


def multiprocess_dir() -> str | None:
    """prometheus_client's own variable, read by it from the environment when it is imported (so it is not a
    Settings field: a .env file could not set it for prometheus_client)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_endpoint(state: ServiceStateCollector):
    """GET /metrics: this process's metrics (all processes' under multiprocess mode) and the service's state."""
    path = multiprocess_dir()
    source = Collectors(MultiProcessCollector(None, path=path) if path else REGISTRY, state)

    async def metrics(request: Request) -> Response:
        # In a thread: the state's queries block for up to their timeouts when a server is down. The
        # classic text format (0.0.4), as prometheus_client's own server answers by default.
        body = await run_in_threadpool(generate_latest, source)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return metrics
