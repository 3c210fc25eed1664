"""The abuse suite's API: `batch-export serve` in a process of its own, holding secrets worth stealing.

The API connects to Postgres and Redis as users that need a password, and signs links with a
SECRET_KEY of its own, so a test can search everything the server said (replies and logs) for
each secret. Running it as a separate process also lets a test read its memory from /proc.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
from psycopg.types.json import Jsonb

import db
from db import batch_exports
from devstack.servers import LocalPostgres
from schemas.settings import Settings
from tests.support.abuse import (
    CANARY,
    Arena,
    ServedApi,
    add_password_user_to_postgres,
    add_password_user_to_redis,
    insert_attacker_rows,
    serve_api,
)
from tests.support.exports import run_export
from tests.support.rpc_client import RpcClient
from tests.support.world import new_project


@pytest.fixture(scope="package", autouse=True)
def leave_no_active_exports(database_url: str) -> Iterator[None]:
    """Exports these tests leave QUEUED would be picked up by the sweep of a later suite's worker: finish them."""
    with db.connect(database_url, autocommit=True) as conn:
        started = conn.execute("SELECT now() AS t").fetchone()["t"]
    yield
    with db.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE batch_exports SET status = 'CANCELLED', finished_at = now(), updated_at = now()"
            " WHERE status IN ('QUEUED', 'PROCESSING') AND created_at >= %s",
            (started,),
        )


@pytest.fixture(scope="package")
def abuse_api(
    settings: Settings, local_postgres: LocalPostgres, redis_url: str, tmp_path_factory
) -> Iterator[ServedApi]:
    folder = tmp_path_factory.mktemp("abuse-api")
    values = {
        "database password": "pgpw-" + secrets.token_hex(12),
        "redis password": "rdpw-" + secrets.token_hex(12),
        "SECRET_KEY": "sk-" + secrets.token_hex(20),
    }
    env = {
        "DATABASE_URL": add_password_user_to_postgres(local_postgres, "bx_abuse", values["database password"]),
        "REDIS_URL": add_password_user_to_redis(redis_url, "bx_abuse", values["redis password"]),
        "SECRET_KEY": values["SECRET_KEY"],
    }
    with serve_api(env, folder, values) as served:
        yield served


@pytest.fixture
def abuse_client(abuse_api: ServedApi) -> Iterator[RpcClient]:
    rpc_client = RpcClient(abuse_api.url)
    yield rpc_client
    rpc_client.http.close()


@pytest.fixture(scope="module")
def module_conn(database_url: str) -> Iterator[psycopg.Connection]:
    with db.connect(database_url, autocommit=True) as connection:
        yield connection


# --- what every reply must look like ----------------------------------------------------------------


# --- two tenants: a victim with data and a finished export, and an attacker ---------------------------


@pytest.fixture(scope="package")
def arena(database_url: str, settings: Settings, tmp_path_factory) -> Iterator[Arena]:
    from devstack.seed import seed

    with db.connect(database_url, autocommit=True) as conn:
        victim = new_project(conn, f"victim {CANARY}")
        attacker = new_project(conn, "attacker")
        seed(conn, victim.id, traces=25)
        conn.execute(
            "INSERT INTO traces (id, project_id, timestamp, name, user_id, metadata) VALUES (%s, %s, now(), %s, %s, %s)",
            (f"t-{CANARY}", victim.id, f"secret plans {CANARY}", CANARY, Jsonb({"customer": CANARY})),
        )
        victim_owner = victim.member("OWNER", name=f"Victor {CANARY}")
        attacker_owner = attacker.member("OWNER", name="Mallory")
        row = conn.execute(
            batch_exports.INSERT_SQL,
            batch_exports.insert_params(
                project_id=victim.id,
                user_id=None,
                name=f"victim export {CANARY}",
                format="CSV",
                query={"tableName": "traces"},
            ),
        ).fetchone()
        finished = run_export(conn, row["id"], tmp_path_factory.mktemp("victim-export"))
        assert finished["status"] == "COMPLETED", finished["log"]
        storage_root = Path(urlparse(settings.EXPORT_STORAGE_URL).path)
        assert CANARY.encode() in (storage_root / finished["object_key"]).read_bytes()
        yield Arena(
            victim,
            attacker,
            victim_owner,
            attacker_owner,
            finished,
            insert_attacker_rows(conn, attacker.id),
            storage_root,
        )
