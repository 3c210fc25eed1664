"""One cluster (devstack.cluster: network namespaces on this machine) per test module, always removed afterwards.

Building it needs root: without it the tests fail saying so, never skip silently.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.cluster import API_HOSTS, WORKER_HOSTS, ClusterError, check_can_build, running_cluster
from tests.support.cluster import ClusterWorld

# What the worker hosts are told beyond the cluster's defaults: seconds between attempts, the sweep
# enqueues a QUEUED export without a job after 3 s, a stopping worker hands its job back after 1 s.
WORKER_SETTINGS = {
    "BATCH_EXPORT_JOB_RETRY_DELAYS": "1",
    "BATCH_EXPORT_SWEEP_GRACE_SECONDS": "3",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "1",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterWorld]:
    try:
        check_can_build()
    except ClusterError as exc:
        pytest.fail(f"tests/cluster cannot run here: {exc}", pytrace=False)
    # running_cluster removes the leftovers of a crashed earlier run first, and everything it made at the end.
    # The processes' logs outlive the cluster, in pytest's temporary folder, to read after a failure.
    logs = tmp_path_factory.mktemp("cluster-logs")
    with running_cluster(traces=2000, keep_logs=logs, **WORKER_SETTINGS) as (cluster, seeded):
        yield ClusterWorld(cluster, seeded["project_id"], seeded["token"])


@pytest.fixture(autouse=True)
def healed(world: ClusterWorld) -> Iterator[None]:
    """Whatever a test broke is mended before the next one: every cable plugged, no filter, both workers up."""
    yield
    for host in WORKER_HOSTS:
        world.cluster.heal(host)
        world.cluster.unblock(host)
    for host in API_HOSTS:
        world.cluster.unblock(host)
    for host in WORKER_HOSTS:
        worker = world.worker(host)
        if not worker.alive():
            lives = worker.log().count("*** Listening on")
            world.cluster.wait_worker_ready(world.cluster.start_worker(host), lives + 1)


@pytest.fixture(scope="module")
def reference_sha256(world: ClusterWorld) -> str:
    """The sha256 of an undisturbed export of the query every test exports."""
    export = world.create(0, "undisturbed")
    row = world.final(export["id"])
    assert row["status"] == "COMPLETED", row["log"]
    return row["sha256"]
