"""The cluster is several hosts: each server listens on its host's address only, and processes reach each other by address."""

from __future__ import annotations

import re

import psycopg
import pytest

from devstack.cluster import (
    API_HOSTS,
    API_PORT,
    DATA,
    HOSTS,
    OPERATOR_ADDRESS,
    POSTGRES_PORT,
    REDIS_PORT,
    S3_PORT,
    WORKER_HOSTS,
)
from tests.support.cluster import ClusterWorld
from tests.support.faults import hold_table
from tests.support.processes import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def listening(world: ClusterWorld, host) -> set[str]:
    """The local address:port of every listening TCP socket inside the host."""
    return {line.split()[3] for line in world.cluster.sockets(host).splitlines() if line.strip()}


def test_the_data_host_serves_postgres_redis_and_s3_on_its_address_and_nowhere_else(world: ClusterWorld):
    found = listening(world, DATA)
    for port in (POSTGRES_PORT, REDIS_PORT, S3_PORT):
        assert f"{DATA.address}:{port}" in found, found
    assert all(address.startswith(f"{DATA.address}:") for address in found), f"only the host's address: {found}"


def test_each_api_host_listens_on_its_own_address(world: ClusterWorld):
    for host in API_HOSTS:
        assert listening(world, host) == {f"{host.address}:{API_PORT}"}


def test_no_host_has_a_loopback_to_fall_back_on(world: ClusterWorld):
    for host in HOSTS:
        state = world.cluster.run_in(host, "ip", "-o", "link", "show", "lo")
        assert re.search(r"state DOWN|<LOOPBACK>", state), state


def test_workers_and_apis_reach_postgres_from_their_own_addresses(world: ClusterWorld, reference_sha256: str):
    def clients() -> set[str]:
        with psycopg.connect(world.cluster.database_url, autocommit=True) as conn:
            return {
                row[0]
                for row in conn.execute(
                    "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                )
            }

    # A held export keeps its worker's sessions open; each API keeps its LISTEN connection (access_changed).
    blocker = hold_table(world.cluster.database_url, "traces")
    try:
        export = world.create(0, "whose sessions")
        worker = world.running_on(export["id"])
        seen = wait_for(
            lambda: (found := clients()) >= {worker.address, *(h.address for h in API_HOSTS)} and found,
            60,
            "the sessions",
        )
    finally:
        blocker.close()
    assert world.final(export["id"])["status"] == "COMPLETED"
    # A client over loopback or the Unix socket would show 127.0.0.1 or no address (None).
    assert seen <= {h.address for h in HOSTS} | {OPERATOR_ADDRESS}, f"by address only, never loopback: {seen}"


def test_an_export_created_through_one_api_host_is_run_by_a_worker_host_and_downloaded_through_the_other(
    world: ClusterWorld, reference_sha256: str
):
    export = world.create(0, "through the cluster")
    row = world.final(export["id"])
    assert row["status"] == "COMPLETED", row["log"]
    runs = world.attempts(export["id"])
    assert len(runs) == 1 and runs[0].worker in {world.worker(h).name for h in WORKER_HOSTS}
    assert world.downloaded_sha256(export["id"], n=1) == row["sha256"] == reference_sha256
