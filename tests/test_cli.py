"""The `batch-export` command line, run as a user runs it: a subprocess reading the environment."""

import os
import subprocess
import sys

import pytest

from devstack.servers import free_port
from tests.support.rpc_client import RpcClient


def run_cli(*args: str, env_overrides: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_overrides or {})}
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, timeout=120)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_migrate_is_idempotent(settings):
    assert last_line(run_cli("migrate")) == "database is up to date"
    assert last_line(run_cli("migrate")) == "database is up to date"


def test_project_and_user_create_print_an_id_and_a_working_token(settings, api):
    project_id = last_line(run_cli("project", "create", "--name", "CLI project"))
    token = last_line(
        run_cli(
            "user", "create", "--email", "cli@example.com", "--name", "Cli", "--project", project_id, "--role", "MEMBER"
        )
    )
    assert token.startswith("bx_")
    listing = RpcClient(api.url).result("batchExport.all", {"projectId": project_id}, token=token)
    assert listing == {"exports": [], "totalCount": 0}


def test_user_create_with_viewer_role_gets_forbidden(settings, api):
    project_id = last_line(run_cli("project", "create", "--name", "CLI project 2"))
    token = last_line(
        run_cli("user", "create", "--email", "viewer@example.com", "--project", project_id, "--role", "VIEWER")
    )
    error = RpcClient(api.url).error("batchExport.all", {"projectId": project_id}, token=token)
    assert error["data"]["code"] == "FORBIDDEN"


def test_user_create_for_an_unknown_project_fails_clearly(settings):
    result = run_cli("user", "create", "--email", "x@example.com", "--project", "nope", "--role", "OWNER")
    assert result.returncode == 1
    assert "no project with id 'nope'" in result.stderr


def test_user_create_rejects_an_unknown_role(settings):
    result = run_cli("user", "create", "--email", "x@example.com", "--project", "p", "--role", "GOD")
    assert result.returncode == 2
    assert "invalid choice: 'GOD'" in result.stderr


@pytest.mark.parametrize(
    "variable,value",
    [
        ("BATCH_EXPORT_ROW_LIMIT", "lots"),
        ("DATABASE_URL", "mysql://localhost/x"),
        ("EXPORT_STORAGE_URL", "ftp://example/x"),
        ("SECRET_KEY", "short"),
    ],
)
def test_a_bad_setting_is_one_clear_line_not_a_traceback(settings, variable, value):
    result = run_cli("migrate", env_overrides={variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("batch-export: invalid configuration:") and variable in lines[0]
    assert "Traceback" not in result.stderr


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def url_with(database_url: str, *, port: int | None = None, dbname: str | None = None) -> str:
    from urllib.parse import urlparse

    url = urlparse(database_url)
    if port is not None:
        url = url._replace(netloc=f"{url.netloc.rsplit(':', 1)[0]}:{port}")
    if dbname is not None:
        url = url._replace(path=f"/{dbname}")
    return url.geturl()


@pytest.mark.parametrize("command", [["migrate"], ["seed", "--project", "p"]])
def test_postgres_down_is_one_clear_line_and_a_failure(settings, command):
    port = free_port()  # nothing listens there
    result = run_cli(*command, env_overrides={"DATABASE_URL": url_with(settings.DATABASE_URL, port=port)})
    line = one_line_error(result)
    assert line.startswith(f"batch-export: cannot connect to Postgres at 127.0.0.1:{port}: "), line
    assert "refused" in line.lower(), line


def test_migrate_into_a_missing_database_says_how_to_create_it(settings):
    missing = url_with(settings.DATABASE_URL, dbname="no_such_batch_export_db")
    line = one_line_error(run_cli("migrate", env_overrides={"DATABASE_URL": missing}))
    assert line.startswith("batch-export: database no_such_batch_export_db does not exist: create it with "), line
    assert "createdb --encoding=UTF8" in line


def test_a_burst_worker_with_redis_down_is_one_clear_line_and_a_failure(settings):
    port = free_port()  # nothing listens there
    result = run_cli("worker", "--burst", env_overrides={"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [text for text in result.stderr.splitlines() if "Redis" in text]
    assert line.startswith(f"batch-export worker: Redis at 127.0.0.1:{port}/0 is unreachable ("), line


def test_sweep_reports_what_it_enqueued(settings):
    assert last_line(run_cli("sweep")).startswith("enqueued ")


def test_seed_fills_a_project_and_refuses_to_seed_it_twice(settings, conn):
    project_id = last_line(run_cli("project", "create", "--name", "seeded"))
    summary = last_line(run_cli("seed", "--project", project_id, "--traces", "25"))
    assert summary.startswith("seeded in ") and "traces 25" in summary
    assert conn.execute("SELECT count(*) AS n FROM traces WHERE project_id = %s", (project_id,)).fetchone()["n"] == 25
    again = run_cli("seed", "--project", project_id, "--traces", "25")
    assert again.returncode == 1
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr


def test_demo_keeps_postgres_data_where_the_postgres_user_can_reach_it():
    """A clone in a private folder (root's home, a mktemp directory) cannot hold initdb's folder."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import pytest

    from devstack.servers import postgres_can_reach

    if os.geteuid() != 0:
        pytest.fail("this suite runs as root, as CI does")
    base = Path(tempfile.mkdtemp(prefix="bx-reach-"))  # pytest's own tmp_path sits in a 0700 folder
    try:
        os.chmod(base, 0o755)
        private = base / "private"
        private.mkdir(mode=0o700)
        public = base / "public"
        public.mkdir(mode=0o755)
        assert not postgres_can_reach(private / "clone" / ".data")
        assert postgres_can_reach(public / "clone" / ".data")
    finally:
        shutil.rmtree(base)
