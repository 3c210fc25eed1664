"""What the cluster tests read and wait for: exports through the API hosts, the attempts in the worker hosts' logs, locks in Postgres.

The cluster itself (namespaces, bridge, servers, processes, the faults) is devstack.cluster's.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import psycopg

from devstack.cluster import API_HOSTS, WORKER_HOSTS, Cluster, Host, HostProcess
from tests.support.processes import Attempt, attempts_of, wait_for
from tests.support.rpc_client import RpcClient

QUERY = {"tableName": "traces", "filter": None, "orderBy": {"column": "timestamp", "order": "DESC"}}
ACTIVE = ("QUEUED", "PROCESSING")
# Advisory locks of an attempt (workers.outcome.one_attempt_at_a_time): classid "bxat".
ATTEMPT_LOCK_CLASS = 0x62786174
# Long enough for the slowest fault here: a worker's lease (25 s) and Postgres's keepalive (25 s) to run
# out, a maintenance cycle (15 s) to notice, and TCP's retransmission backoff to resume after a heal.
SETTLE = 240


@dataclass
class ClusterWorld:
    """The running cluster, its seeded project and owner, and a client for each API host."""

    cluster: Cluster
    project_id: str
    token: str

    def api(self, n: int) -> RpcClient:
        return RpcClient(Cluster.api_url(API_HOSTS[n]), httpx.Client(timeout=60))

    def worker(self, host: Host) -> HostProcess:
        return self.cluster.processes[host.name.removeprefix("bxc-")]

    @property
    def workers(self) -> list[HostProcess]:
        return [self.worker(host) for host in WORKER_HOSTS]

    def create(self, n: int, name: str) -> dict[str, Any]:
        params = {"projectId": self.project_id, "name": name, "format": "CSV", "query": QUERY}
        return self.api(n).result("batchExport.create", params, token=self.token)

    def cancel(self, n: int, export_id: str) -> dict[str, Any]:
        params = {"projectId": self.project_id, "batchExportId": export_id}
        return self.api(n).call("batchExport.cancel", params, token=self.token)

    def load(self, export_id: str) -> dict[str, Any]:
        with psycopg.connect(self.cluster.database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
            row = conn.execute("SELECT * FROM batch_exports WHERE id = %s", (export_id,)).fetchone()
        assert row is not None, export_id
        return row

    def statuses(self) -> dict[str, int]:
        """How many of the project's exports are in each status."""
        with psycopg.connect(self.cluster.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT status, count(*) FROM batch_exports WHERE project_id = %s GROUP BY status", (self.project_id,)
            ).fetchall()
        return dict(rows)

    def final(self, export_id: str, timeout: float = SETTLE) -> dict[str, Any]:
        """The export's row once it is final, within `timeout` (else the test fails with the workers' logs)."""
        return wait_for(
            lambda: (row := self.load(export_id))["status"] not in ACTIVE and row,
            timeout,
            f"export {export_id} to end",
            *self.workers,
        )

    def downloaded_sha256(self, export_id: str, n: int = 1) -> str:
        """The sha256 of the export's file, downloaded through API host `n` (a presigned link to the data host's S3)."""
        link = self.api(n).result(
            "batchExport.downloadUrl", {"projectId": self.project_id, "batchExportId": export_id}, token=self.token
        )
        response = httpx.get(link["url"], timeout=60)
        assert response.status_code == 200, response.text[:500]
        return hashlib.sha256(response.content).hexdigest()

    def attempts(self, export_id: str) -> list[Attempt]:
        return attempts_of(export_id, *self.workers)

    def running_on(self, export_id: str, timeout: float = 60, exclude: Host | None = None) -> Host:
        """The worker host whose log has an attempt at the export started (other than on `exclude`)."""

        def started() -> Host | None:
            for host in WORKER_HOSTS:
                if host != exclude and any(a.worker == self.worker(host).name for a in self.attempts(export_id)):
                    return host
            return None

        return wait_for(started, timeout, f"an attempt at {export_id} to start", *self.workers)

    def lock_holders(self, export_id: str) -> list[str]:
        """The client addresses of the sessions holding the export's attempt lock (at most one, ever)."""
        with psycopg.connect(self.cluster.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT host(a.client_addr) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s"
                " AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid",
                (ATTEMPT_LOCK_CLASS, export_id),
            ).fetchall()
        return [row[0] for row in rows]

    def completions(self, export_id: str) -> list[str]:
        """The workers that logged the export's completion (workers.outcome.complete: one line when it wins)."""
        line = f"export {export_id} completed:"
        return [worker.name for worker in self.workers for _ in range(worker.log().count(line))]

    def job_in_redis(self, export_id: str) -> bool:
        import redis

        with redis.Redis.from_url(self.cluster.redis_url) as connection:
            return bool(connection.exists(f"rq:job:{export_id}"))

    def objects(self) -> list[str]:
        s3 = boto3.client(
            "s3",
            endpoint_url=self.cluster.s3_endpoint,
            aws_access_key_id="cluster",
            aws_secret_access_key="cluster",
            region_name="us-east-1",
        )
        listing = s3.list_objects_v2(Bucket="exports")
        return [item["Key"] for item in listing.get("Contents", [])]


@dataclass
class LockWatch:
    """Polls, in a thread, who holds an export's attempt lock: the holders in turn, and whether two ever did at once."""

    world: ClusterWorld
    export_id: str
    holders: list[str] = field(default_factory=list)  # each change of holder, in order ("" for none)
    most_at_once: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LockWatch:
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = self.world.lock_holders(self.export_id)
            self.most_at_once = max(self.most_at_once, len(now))
            current = ",".join(sorted(now))
            if not self.holders or self.holders[-1] != current:
                self.holders.append(current)
            time.sleep(0.1)
