"""The service's state as Prometheus gauges, read from Redis and Postgres when /metrics is scraped.

The queue, the workers and the active exports belong to the whole service, not to the process that
happens to be scraped, so they are not counted as things happen but read at scrape time: a few cheap
queries (two Redis round trips, one indexed count in Postgres), each bounded by a short timeout. When
Redis or Postgres does not answer, its gauges are left out and `batch_export_state_source_up` says
which one is missing, so a scrape answers within seconds whatever is down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import worker_registration
from rq.job import Job
from rq.utils import utcparse

from db import batch_exports
from schemas import ACTIVE_STATUSES
from workers.queue import export_queue

log = logging.getLogger(__name__)

# Seconds a scrape waits for each server. libpq's connect timeout cannot be shorter than 2 s.
REDIS_TIMEOUT = 1.0
POSTGRES_CONNECT_TIMEOUT = 2
POSTGRES_STATEMENT_TIMEOUT_MS = 1000
# The registries of RQ's jobs that are not in the queue itself, by the state they name.
_REGISTRIES = ("started", "scheduled", "deferred")


class ServiceStateCollector:
    """A custom collector: `collect()` reads the queue and the workers from Redis, the active exports from Postgres."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        self.database_url = database_url
        # A connection of its own, failing fast: no retries, no backoff, one short timeout per step.
        self.redis = redis.Redis.from_url(
            redis_url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT, retry=Retry(NoBackoff(), 0)
        )

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "batch_export_state_source_up",
            "1 when the server the state gauges are read from answered this scrape, 0 when they are left out",
            labels=["source"],
        )
        for source, read in (("redis", self._from_redis), ("postgres", self._from_postgres)):
            try:
                families = list(read())
            except (redis.RedisError, psycopg.Error) as exc:
                log.warning(
                    "metrics: the state read from %s is left out: it is unreachable (%s)", source, type(exc).__name__
                )
                up.add_metric([source], 0)
            else:
                up.add_metric([source], 1)
                yield from families
        yield up

    def _from_redis(self) -> Iterator[Metric]:
        queue = export_queue(self.redis)
        with self.redis.pipeline(transaction=False) as pipeline:
            pipeline.llen(queue.key)
            pipeline.lindex(queue.key, 0)  # RQ pushes on the right and pops on the left: the oldest job
            for name in _REGISTRIES:
                pipeline.zcard(getattr(queue, f"{name}_job_registry").key)
            pipeline.smembers(worker_registration.WORKERS_BY_QUEUE_KEY % queue.name)
            queued, oldest, *registered, worker_keys = pipeline.execute()
        with self.redis.pipeline(transaction=False) as pipeline:
            if oldest:
                pipeline.hget(Job.key_for(oldest.decode()), "enqueued_at")
            for key in worker_keys:
                pipeline.hget(key, "state")
            answers = pipeline.execute()
        enqueued_at = answers.pop(0) if oldest else None
        worker_states = answers

        jobs = GaugeMetricFamily(
            "batch_export_queue_jobs",
            "Jobs of the batch-exports queue by state: waiting in the queue (queued), running (started),"
            " waiting for a retry's delay (scheduled), waiting for other jobs (deferred: an assembly)",
            labels=["state"],
        )
        jobs.add_metric(["queued"], queued)
        for name, count in zip(_REGISTRIES, registered):
            jobs.add_metric([name], count)
        yield jobs
        age = 0.0
        if enqueued_at:
            age = max(0.0, (datetime.now(UTC) - utcparse(enqueued_at.decode())).total_seconds())
        yield GaugeMetricFamily(
            "batch_export_queue_oldest_job_age_seconds",
            "Seconds since the job at the head of the queue was enqueued (0 when the queue is empty)",
            value=age,
        )
        workers = GaugeMetricFamily(
            "batch_export_workers",
            "Workers alive on the batch-exports queue (registered, with a heartbeat not yet expired), by state",
            labels=["state"],
        )
        states: dict[str, int] = {}
        for state in worker_states:
            if state is not None:  # None: its key expired, the worker is dead (RQ drops it from the set later)
                states[state.decode()] = states.get(state.decode(), 0) + 1
        for state in ("busy", "idle", *sorted(set(states) - {"busy", "idle"})):
            workers.add_metric([state], states.get(state, 0))
        yield workers

    def _from_postgres(self) -> Iterator[Metric]:
        options = f"-c statement_timeout={POSTGRES_STATEMENT_TIMEOUT_MS}"
        with psycopg.connect(
            self.database_url,
            autocommit=True,
            connect_timeout=POSTGRES_CONNECT_TIMEOUT,
            options=options,
            row_factory=psycopg.rows.dict_row,
        ) as conn:
            counts = batch_exports.active_counts(conn)
        active = GaugeMetricFamily(
            "batch_export_exports_active", "Exports queued or being written, by status", labels=["status"]
        )
        for status in ACTIVE_STATUSES:
            active.add_metric([status], counts[status])
        yield active

    def close(self) -> None:
        self.redis.close()
