"""`batch-export scheduled …` as an operator runs it: real subprocesses calling the API, and `reseal` after a key rotation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.settings import INSECURE_DEV_ENCRYPTION_KEY
from tests.support.destinations import s3_destination
from tests.support.scheduled import scheduled_world
from workers.secret_box import SecretBox

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run(world, *args: str, **env: str) -> subprocess.CompletedProcess:
    connection = ["--api", world.api.url, "--token", world.token, "--project", world.project.id]
    command, action, *rest = args
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BATCH_EXPORT_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", command, action, *connection, *rest],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**clean, **world.env, "PYTHONPATH": str(REPO), **env},
        cwd=world.folder,
        timeout=120,
    )


def test_a_scheduled_export_made_listed_validated_run_and_deleted_from_the_terminal(
    conn, database_url, local_s3, tmp_path
):
    target = s3_destination(local_s3, prefix="lake")
    with scheduled_world(conn, database_url, target, tmp_path) as world:
        destination = [
            "--s3-bucket", target.model.bucket, "--endpoint", target.model.endpoint, "--path-style",
            "--access-key-id", target.model.accessKeyId, "--prefix", "lake",
        ]  # fmt: skip
        args = ["--name", "terminal", *destination, "--tables", "traces,scores", "--schedule", "daily"]

        no_secret = run(world, "scheduled", "create", *args)
        assert no_secret.returncode == 2 and "BATCH_EXPORT_DESTINATION_SECRET" in no_secret.stderr

        created = run(world, "scheduled", "create", *args, BATCH_EXPORT_DESTINATION_SECRET=target.secret)
        assert created.returncode == 0, created.stderr
        schedule_id = created.stdout.strip().splitlines()[-1]
        assert "traces,scores as PARQUET, daily" in created.stderr

        listed = run(world, "scheduled", "list")
        assert (
            listed.returncode == 0
            and schedule_id in listed.stdout
            and f"s3://{target.model.bucket}/lake" in listed.stdout
        )

        validated = run(world, "scheduled", "validate", schedule_id)
        assert validated.returncode == 0 and validated.stdout.startswith("ok: wrote, read back and deleted")

        started = run(world, "scheduled", "run-now", schedule_id)
        assert started.returncode == 0 and "run " in started.stdout, started.stderr
        world.wait_runs(schedule_id, 1)
        runs = run(world, "scheduled", "runs", schedule_id)
        assert runs.returncode == 0 and "COMPLETED" in runs.stdout and "2/2" in runs.stdout

        disabled = run(world, "scheduled", "disable", schedule_id)
        assert disabled.stdout.strip() == f"scheduled export {schedule_id} is disabled"
        assert "DISABLED" in run(world, "scheduled", "list").stdout
        assert run(world, "scheduled", "enable", schedule_id).stdout.strip().endswith("is enabled")

        local_s3.revoke_key(target.model.accessKeyId)
        refused = run(world, "scheduled", "validate", schedule_id)
        assert refused.returncode == 1 and "InvalidAccessKeyId" in refused.stdout

        deleted = run(world, "scheduled", "delete", schedule_id)
        assert deleted.returncode == 0
        gone = run(world, "scheduled", "runs", schedule_id)
        assert gone.returncode == 4 and "NOT_FOUND" in gone.stderr
        everything = "".join(r.stdout + r.stderr for r in (created, listed, validated, started, runs, refused))
        assert target.secret not in everything


def reseal(world, key: str, old_key: str) -> subprocess.CompletedProcess:
    """`batch-export scheduled reseal` with `key` current and `old_key` the one being rotated out."""
    rotated = {"SECRETS_ENCRYPTION_KEY": key, "SECRETS_ENCRYPTION_OLD_KEYS": old_key}
    return subprocess.run(
        [sys.executable, "-m", "cli", "scheduled", "reseal"],
        capture_output=True,
        text=True,
        env={**os.environ, **world.env, **rotated, "PYTHONPATH": str(REPO)},
        cwd=world.folder,
        timeout=120,
    )


def test_reseal_moves_every_secret_onto_the_new_key(conn, database_url, local_s3, tmp_path):
    target = s3_destination(local_s3)
    with scheduled_world(conn, database_url, target, tmp_path) as world:
        schedule = world.create(enabled=False)
        old_key, new_key = INSECURE_DEV_ENCRYPTION_KEY, "c3" * 32
        result = reseal(world, new_key, old_key)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("resealed ") and "secret(s)" in result.stdout
        sealed = conn.execute("SELECT secret FROM scheduled_exports WHERE id = %s", (schedule["id"],)).fetchone()
        assert SecretBox(new_key).open(sealed["secret"], schedule["id"]) == target.secret, "only the new key needed"
        # And back: the suite's other schedules (one database) stay readable with the suite's key.
        again = reseal(world, old_key, new_key)
        assert again.returncode == 0 and again.stdout == result.stdout, again.stderr
