"""A deployment of its own for each fault test: database, Redis, storage and settings it may break, and real processes.

Each test gets a fresh database copied from a template holding two seeded projects (on the suite's
Postgres; tests that restart Postgres start their own server) and a Redis of its own. So the sweep
its workers run sees only this test's exports, and stopping Redis, flushing it or leaving a killed
worker's keys behind never touches another test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import db
from devstack.servers import LocalPostgres, LocalRedis
from tests.support.exports import insert_big_traces
from tests.support.faults import BIG_TENANT_TRACES, FaultStack, Template, fault_stack, make_tenant, postgres_url
from tests.support.servers import running_postgres, running_redis
from tests.support.world import Project


@pytest.fixture(scope="session")
def fault_template(local_postgres: LocalPostgres) -> Template:
    name = "faults_template"
    with psycopg.connect(local_postgres.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = postgres_url(local_postgres, name)
    db.migrate(url)
    with db.connect(url, autocommit=True) as conn:
        small = make_tenant(conn, "faults: small")
        big = make_tenant(conn, "faults: big", traces=None)
        insert_big_traces(conn, big.id, BIG_TENANT_TRACES)
    return Template(local_postgres, name, small, big)


@pytest.fixture
def small_tenant(fault_template: Template) -> Project:
    return fault_template.small


@pytest.fixture
def big_tenant(fault_template: Template) -> Project:
    return fault_template.big


@pytest.fixture
def fault_database(fault_template: Template) -> Iterator[str]:
    """A fresh copy of the template for one test, dropped afterwards."""
    name = f"faults_{uuid.uuid4().hex[:12]}"
    server = fault_template.server
    with psycopg.connect(server.admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(fault_template.name)
            )
        )
    try:
        yield postgres_url(server, name)
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def conn(fault_database: str) -> Iterator[psycopg.Connection]:
    """A connection to this test's database (the suite's `conn` is another one)."""
    with db.connect(fault_database, autocommit=True) as connection:
        yield connection


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    with running_redis("bx-faults-redis-") as server:
        yield server


@pytest.fixture
def stack(
    fault_database: str, own_redis: LocalRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultStack]:
    with fault_stack(fault_database, own_redis, tmp_path, monkeypatch) as deployed:
        yield deployed


@pytest.fixture
def own_postgres() -> Iterator[LocalPostgres]:
    """A Postgres server of the test's own, for tests that stop and restart it."""
    with running_postgres("bx-faults-pg-") as server:
        yield server


@pytest.fixture
def restartable_stack(
    own_postgres: LocalPostgres, own_redis: LocalRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultStack]:
    with fault_stack(own_postgres.url, own_redis, tmp_path, monkeypatch) as deployed:
        yield deployed
