"""The `batch-export` command line: run the service, manage projects and users, seed data, run the demo.

Commands that create something print its id or token alone on the last line of stdout, so a script
can read it with `| tail -n 1`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from schemas.settings import Settings, SettingsError, load_settings


def _settings():
    from workers.logs import configure_logging

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"batch-export: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # From here on the command logs as LOG_FORMAT says, knowing which secrets to keep out of its lines.
    configure_logging(settings)
    return settings


def _tell_operator(settings: Settings, command: str, message: str, level: int = logging.WARNING) -> None:
    """A line for whoever runs `command`: as it always read in a terminal, or a log line among the
    others (one JSON object) with LOG_FORMAT=json, so a log collector sees no stray text."""
    if settings.LOG_FORMAT == "json":
        logging.getLogger(f"batch-export.{command}").log(level, message)
    else:
        print(f"batch-export {command}: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _database_reachable() -> Iterator[None]:
    """A database that cannot be reached is one line on stderr and exit status 1, not a traceback."""
    from db.connection import CannotConnect

    try:
        yield
    except CannotConnect as exc:
        print(f"batch-export: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _service_settings(command: str):
    """The settings of a long-running process (serve, worker), with its warnings printed once at start."""
    settings = _settings()
    for warning in settings.startup_warnings():
        _tell_operator(settings, command, warning)
    return settings


def cmd_migrate(args: argparse.Namespace) -> None:
    import db

    settings = _settings()
    with _database_reachable():
        applied = db.migrate(settings.DATABASE_URL)
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")


# PUBLIC_BASE_URL hosts that name this machine: a port there must be the one `serve` listens on.
_THIS_MACHINE = {"localhost", "127.0.0.1", "::1"}
_ANY_ADDRESS = {"", "0.0.0.0", "::"}


def public_base_url(settings: Settings, host: str, port: int) -> str:
    """The base of the links the API signs: PUBLIC_BASE_URL when set, else this server's own address.

    An explicit PUBLIC_BASE_URL on this machine but on another port would send every link and email
    to some other service, so it is refused (SettingsError).
    """
    if "PUBLIC_BASE_URL" not in settings.model_fields_set:
        if host in _ANY_ADDRESS:
            logging.getLogger("batch-export").warning(
                "PUBLIC_BASE_URL is not set and --host %r names no address: links will point at 127.0.0.1;"
                " set PUBLIC_BASE_URL to the address users reach this API at",
                host,
            )
        name = "127.0.0.1" if host in _ANY_ADDRESS else host
        return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"
    url = urlparse(settings.PUBLIC_BASE_URL)
    url_port = url.port or (443 if url.scheme == "https" else 80)
    if (url.hostname in _THIS_MACHINE or (url.hostname or "").startswith("127.")) and url_port != port:
        raise SettingsError(
            f"PUBLIC_BASE_URL {settings.PUBLIC_BASE_URL} points at port {url_port} of this machine but serve"
            f" listens on port {port}: set PUBLIC_BASE_URL to match, or unset it to derive it from --host/--port"
        )
    return settings.PUBLIC_BASE_URL


def cmd_serve(args: argparse.Namespace) -> None:
    import os

    import uvicorn

    settings = _service_settings("serve")  # fail with one line, before uvicorn starts, if the configuration is bad
    try:
        base_url = public_base_url(settings, args.host, args.port)
    except SettingsError as exc:
        print(f"batch-export: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # The app reads its settings from the environment when uvicorn imports it.
    os.environ["PUBLIC_BASE_URL"] = base_url
    with _metrics_shared_by(args.workers):
        # Keep idle connections longer than clients' own reuse window (httpx: 5 s, uvicorn's default
        # too), so a client never sends on a connection the server is closing. No log_config: uvicorn's
        # lines go through the one handler workers.logs configured, in its format.
        uvicorn.run(
            "procedures.app:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="info",
            log_config=None,
            access_log=args.access_log,
            timeout_keep_alive=75,
            # SIGTERM: uvicorn stops listening and lets open requests finish, for this long at most.
            timeout_graceful_shutdown=settings.API_SHUTDOWN_GRACE_SECONDS,
        )


@contextlib.contextmanager
def _metrics_shared_by(processes: int) -> Iterator[None]:
    """Several API processes write their metrics into one folder (prometheus_client's multiprocess mode),
    so a scrape of any of them serves the sum: PROMETHEUS_MULTIPROC_DIR when set (emptied first: counts
    of an earlier run would add up with this one's), else a temporary folder removed at the end."""
    import os
    import shutil
    import tempfile

    if processes <= 1:
        yield
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="batch-export-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)


def cmd_worker(args: argparse.Namespace) -> None:
    import os

    # A worker keeps its metrics in its own memory and serves them itself (WORKER_METRICS_PORT); the API's
    # multiprocess folder, if the environment names it, is not for it. Before prometheus_client is imported.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    import redis

    from workers.queue import REDIS_RETRY_MAX_DELAY, build_worker, redis_address, wait_for_redis

    settings = _service_settings("worker")
    if settings.WORKER_METRICS_PORT is not None:
        # First, so /metrics answers even while the worker waits for Redis.
        from workers.metrics import serve_worker_metrics

        try:
            serve_worker_metrics(settings.WORKER_METRICS_PORT)
        except OSError as exc:
            print(
                f"batch-export worker: cannot serve metrics on WORKER_METRICS_PORT={settings.WORKER_METRICS_PORT}:"
                f" {exc.strerror or exc}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2) from None
    connection = redis.Redis.from_url(settings.REDIS_URL)

    # A worker rides out Redis outages once running, so it waits for Redis at start too: a supervisor
    # may start it before Redis, and a restart during an outage must not become a crash loop. A burst
    # run (cron, a script) has no outage to ride out: it says so in one line and fails.
    def unreachable(exc: Exception) -> None:
        if args.burst:
            _tell_operator(
                settings, "worker", f"Redis at {redis_address(connection)} is unreachable ({exc})", logging.ERROR
            )
            raise SystemExit(1)
        _tell_operator(
            settings,
            "worker",
            f"Redis at {redis_address(connection)} is unreachable ({exc});"
            f" waiting for it, trying again every {REDIS_RETRY_MAX_DELAY:.0f} s at most",
        )

    try:
        wait_for_redis(connection, unreachable)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    worker = build_worker(connection)
    # The scheduler runs RQ's delayed retries (the backoff between attempts). RQ adds no handler of its
    # own: the root logger already has ours (workers.logs), and the work horse it forks inherits it.
    worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")


def cmd_scheduler(args: argparse.Namespace) -> None:
    """RQ's CronScheduler, ticking the scheduled exports' planner; the workers run what it enqueues."""
    import redis

    from workers.queue import REDIS_RETRY_MAX_DELAY, redis_address, wait_for_redis
    from workers.scheduled import build_cron_scheduler

    settings = _service_settings("scheduler")
    connection = redis.Redis.from_url(settings.REDIS_URL)

    def unreachable(exc: Exception) -> None:
        _tell_operator(
            settings,
            "scheduler",
            f"Redis at {redis_address(connection)} is unreachable ({exc});"
            f" waiting for it, trying again every {REDIS_RETRY_MAX_DELAY:.0f} s at most",
        )

    try:
        wait_for_redis(connection, unreachable)
        build_cron_scheduler(connection, settings).start()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def cmd_sweep(args: argparse.Namespace) -> None:
    from workers.maintenance import delete_expired, prune_changes
    from workers.queue import sweep

    settings = _settings()
    deleted = delete_expired(settings)
    pruned = prune_changes(settings)
    enqueued = sweep(settings)
    print(f"deleted {deleted} expired export file(s)")
    print(f"pruned {pruned} export change(s) older than live streams replay")
    print(f"enqueued {len(enqueued)} export(s) that had no job")


def cmd_project_create(args: argparse.Namespace) -> None:
    import db
    from db import access

    with db.connect(_settings().DATABASE_URL) as conn:
        project = access.create_project(conn, args.name, args.org_name)
    print(project["id"])


def cmd_user_create(args: argparse.Namespace) -> None:
    import db
    from db import access

    settings = _settings()
    with db.connect(settings.DATABASE_URL) as conn:
        org_id = access.project_org_id(conn, args.project)
        if org_id is None:
            print(f"batch-export: no project with id {args.project!r}", file=sys.stderr)
            raise SystemExit(1)
        user = access.upsert_user(conn, args.email, args.name)
        # Organization membership is what a project membership hangs off; it grants nothing by itself
        # unless --org-role says so. The project role decides (it overrides the organization role).
        access.set_org_role(conn, org_id, user["id"], args.org_role)
        if args.role is not None:
            access.set_project_role(conn, args.project, user["id"], args.role)
        token = access.create_session(conn, user["id"], timedelta(hours=args.ttl_hours or settings.SESSION_TTL_HOURS))
    print(token)


def cmd_seed(args: argparse.Namespace) -> None:
    import time

    import db
    from devstack.seed import SeedError, seed

    settings = _settings()
    started = time.monotonic()
    if args.live is not None:
        import signal

        from devstack.seed import ingest_live

        # Stopped by Ctrl+C, or by SIGTERM from a supervisor or a script (a background job ignores SIGINT).
        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)

        with _database_reachable(), db.connect(settings.DATABASE_URL, autocommit=True) as conn:
            added = ingest_live(conn, args.project, per_second=args.live, seconds=args.seconds)
        print(f"added {added} traces (with an observation and a score each) in {time.monotonic() - started:.1f}s")
        return
    try:
        with _database_reachable(), db.connect(settings.DATABASE_URL) as conn:
            counts = seed(conn, args.project, traces=args.traces, rng_seed=args.rng_seed)
    except SeedError as exc:
        print(f"batch-export: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    summary = ", ".join(f"{table} {n}" for table, n in counts.items())
    print(f"seeded in {time.monotonic() - started:.1f}s: {summary}")


def cmd_demo(args: argparse.Namespace) -> None:
    from cli.api_client import ApiClient
    from devstack.demo import run_demo, stop_demo

    if args.stop:
        stop_demo()
    else:
        run_demo(traces=args.traces, port=args.port, api_client=ApiClient, workers=args.workers)


def cmd_cluster(args: argparse.Namespace) -> None:
    from cli.api_client import ApiClient
    from devstack.cluster import ClusterError, run_cluster

    try:
        run_cluster(traces=args.traces, api_client=ApiClient)
    except ClusterError as exc:
        print(f"batch-export cluster: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("batch-export cluster: interrupted; the cluster is removed", file=sys.stderr)
        raise SystemExit(130) from None


def cmd_codegen(args: argparse.Namespace) -> None:
    from pathlib import Path

    from procedures.app import API_TITLE, API_VERSION, app_router
    from rpc.typescript import write_client

    try:
        written = write_client(app_router, Path(args.out), info={"title": API_TITLE, "version": API_VERSION})
    except RuntimeError as exc:
        print(f"batch-export: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    for path in written:
        print(path)


def cmd_docs(args: argparse.Namespace) -> None:
    from cli.docs import write_docs

    for path in write_docs(Path(args.out)):
        print(path)


def build_parser() -> argparse.ArgumentParser:
    from procedures.roles import ROLES

    parser = argparse.ArgumentParser(prog="batch-export", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply database migrations (idempotent)").set_defaults(run=cmd_migrate)

    serve = commands.add_parser("serve", help="run the API (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--workers", type=int, default=1, help="API processes (default 1); /metrics of any sums them all"
    )
    serve.set_defaults(run=cmd_serve)

    worker = commands.add_parser("worker", help="run an RQ worker on the batch-exports queue")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(run=cmd_worker)

    commands.add_parser(
        "scheduler", help="RQ's cron scheduler: plans scheduled exports' runs (run one or more beside the workers)"
    ).set_defaults(run=cmd_scheduler)
    commands.add_parser(
        "sweep", help="enqueue exports left QUEUED without a job; delete expired export files"
    ).set_defaults(run=cmd_sweep)

    project = commands.add_parser("project", help="projects").add_subparsers(dest="action", required=True)
    project_create = project.add_parser("create", help="create a project and its organization; prints its id")
    project_create.add_argument("--name", required=True)
    project_create.add_argument("--org-name")
    project_create.set_defaults(run=cmd_project_create)

    user = commands.add_parser("user", help="users").add_subparsers(dest="action", required=True)
    user_create = user.add_parser("create", help="create a user with a project role; prints a session token")
    user_create.add_argument("--email", required=True)
    user_create.add_argument("--name")
    user_create.add_argument("--project", required=True, help="project id")
    user_create.add_argument("--role", choices=ROLES, help="the role in the project")
    user_create.add_argument("--org-role", choices=ROLES, default="NONE", help="the role in the project's organization")
    user_create.add_argument("--ttl-hours", type=float, help="session lifetime (default SESSION_TTL_HOURS)")
    user_create.set_defaults(run=cmd_user_create)

    seed = commands.add_parser("seed", help="insert realistic demo rows into every exportable table")
    seed.add_argument("--project", required=True)
    seed.add_argument("--traces", type=int, default=1000)
    seed.add_argument("--rng-seed", type=int, default=0)
    seed.add_argument(
        "--live",
        type=float,
        metavar="PER_SECOND",
        help="add traces as ingestion does, this many a second, until Ctrl+C or SIGTERM",
    )
    seed.add_argument("--seconds", type=float, help="with --live: stop after this long")
    seed.set_defaults(run=cmd_seed)

    codegen = commands.add_parser("codegen", help="write the TypeScript types and openrpc.json of the procedures")
    codegen.add_argument("--out", default="clients/ts", help="the client package, with `npm ci` run in it")
    codegen.set_defaults(run=cmd_codegen)

    docs = commands.add_parser("docs", help="write docs/API.md and docs/COLUMNS.md from the procedures and tables")
    docs.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"), help="the folder to write")
    docs.set_defaults(run=cmd_docs)

    demo = commands.add_parser("demo", help="local Postgres and Redis, API, worker, demo data and a first export")
    demo.add_argument("--traces", type=int, default=5000)
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--workers", type=int, default=2, help="worker processes to start (default 2)")
    demo.add_argument("--stop", action="store_true", help="stop the demo's servers")
    demo.set_defaults(run=cmd_demo)

    cluster = commands.add_parser(
        "cluster",
        help="the service across network namespaces on this machine (root): one export through it, then removed",
    )
    cluster.add_argument("--traces", type=int, default=2000, help="traces to seed (default 2000)")
    cluster.set_defaults(run=cmd_cluster)

    # The API from a terminal, for people: `export` and `exports …` (they call the API, never the database).
    from cli.client import add_client_commands
    from cli.scheduled import add_scheduled_commands

    add_client_commands(commands)
    add_scheduled_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    from workers.logs import configure_logging

    # Text until a command reads the settings (the terminal client never does); see _settings.
    configure_logging()
    args = build_parser().parse_args(argv)
    args.run(args)
