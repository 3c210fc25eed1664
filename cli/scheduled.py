"""`batch-export scheduled …`: scheduled exports over the API (create, list, enable/disable, validate, run-now,
runs, delete), and `scheduled reseal`, the operator's half of a key rotation.

The destination's secret is never an argument (it would sit in the shell's history and in `ps`): it is
read from BATCH_EXPORT_DESTINATION_SECRET, or asked for without echo.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import datetime
from typing import Any, get_args

from cli.client import _api, _cell, _connection_options, _pad, _project, _run, _when, _width
from cli.errors import EXIT_CODES_HELP, EXIT_FAILED, EXIT_OK, UsageError
from schemas import Compression, ExportFormat
from schemas.scheduled_exports import Schedule

SECRET_VARIABLE = "BATCH_EXPORT_DESTINATION_SECRET"


def _secret(kind: str) -> str:
    secret = os.environ.get(SECRET_VARIABLE)
    if secret:
        return secret
    if not sys.stdin.isatty():
        raise UsageError(f"the destination's {kind}: set {SECRET_VARIABLE} (it is never taken as an argument).")
    secret = getpass.getpass(f"{kind}: ")
    if not secret:
        raise UsageError(f"the destination needs its {kind}.")
    return secret


def _destination(args: argparse.Namespace, *, with_secret: bool) -> dict[str, Any]:
    if bool(args.s3_bucket) == bool(args.azure_container):
        raise UsageError(
            "give the destination: --s3-bucket B (with --access-key-id), or --azure-container C --azure-account A."
        )
    destination: dict[str, Any]
    if args.s3_bucket:
        if not args.access_key_id:
            raise UsageError("an S3 destination needs --access-key-id (its secret comes from the environment).")
        destination = {
            "type": "s3",
            "bucket": args.s3_bucket,
            "prefix": args.prefix,
            "region": args.region,
            "forcePathStyle": args.path_style,
            "accessKeyId": args.access_key_id,
        }
        secret_field, kind = "secretAccessKey", "S3 secret access key"
    else:
        if not args.azure_account:
            raise UsageError("an Azure destination needs --azure-account.")
        destination = {
            "type": "azure",
            "container": args.azure_container,
            "prefix": args.prefix,
            "accountName": args.azure_account,
        }
        secret_field, kind = "accountKey", "Azure account key"
    if args.endpoint:
        destination["endpoint"] = args.endpoint
    if with_secret:
        destination[secret_field] = _secret(kind)
    return destination


def _start_from(text: str) -> dict[str, Any]:
    if text in ("full_history", "from_today"):
        return {"mode": text}
    try:
        date = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--start {text!r}: full_history, from_today, or a date such as 2026-01-01T00:00:00Z."
        ) from None
    return {"mode": "from_date", "date": date.isoformat()}


def cmd_create(args: argparse.Namespace) -> int:
    project = _project(args)
    api = _api(args)
    params: dict[str, Any] = {
        "projectId": project,
        "name": args.name,
        "destination": _destination(args, with_secret=True),
        "tables": [t.strip() for t in args.tables.split(",") if t.strip()],
        "format": args.format,
        "schedule": args.schedule,
        "startFrom": _start_from(args.start),
        "enabled": not args.disabled,
    }
    if args.compression:
        params["compression"] = args.compression
    created = api.call("scheduledExport.create", params)
    print(f"scheduled export {created['id']}: {_summary(created)}", file=sys.stderr, flush=True)
    print(created["id"], flush=True)
    return EXIT_OK


def _summary(schedule: dict[str, Any]) -> str:
    return (
        f"{','.join(schedule['tables'])} as {schedule['format']}, {schedule['schedule']}, into {_where(schedule)}"
        + ("" if schedule["enabled"] else " (disabled)")
    )


def _where(schedule: dict[str, Any]) -> str:
    d = schedule["destination"]
    place = f"s3://{d['bucket']}" if d["type"] == "s3" else f"azure://{d['accountName']}/{d['container']}"
    return f"{place}/{d['prefix']}" if d["prefix"] else place


def cmd_list(args: argparse.Namespace) -> int:
    project = _project(args)
    schedules = _api(args).call("scheduledExport.all", {"projectId": project})["scheduledExports"]
    if not schedules:
        print("no scheduled exports in this project yet")
        return EXIT_OK
    header = ("ID", "NAME", "INTO", "TABLES", "FORMAT", "SCHEDULE", "STATE", "EXPORTED UP TO (UTC)", "NEXT RUN (UTC)")
    rows = [header]
    for s in schedules:
        state = "enabled" if s["enabled"] else "DISABLED"
        if s["lastError"]:
            state += " (failing)" if s["enabled"] else ""
        rows.append(
            (
                s["id"],
                _cell(s["name"], 30),
                _cell(_where(s), 40),
                ",".join(s["tables"]),
                s["format"] if s["compression"] == "none" else f"{s['format']}+{s['compression']}",
                s["schedule"],
                state,
                _when(s["lastSyncAt"]) if s["lastSyncAt"] else "-",
                _when(s["nextSyncAt"]) if s["nextSyncAt"] else "-",
            )
        )
    widths = [max(_width(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(_pad(cell, w) for cell, w in zip(row, widths)).rstrip())
    for s in schedules:
        if s["disabledReason"] or s["lastError"]:
            print(f"{s['id']}: {s['disabledReason'] or s['lastError']}", file=sys.stderr)
    return EXIT_OK


def _ref(args: argparse.Namespace) -> dict[str, str]:
    return {"projectId": _project(args), "scheduledExportId": args.id}


def cmd_enable(args: argparse.Namespace) -> int:
    updated = _api(args).call("scheduledExport.update", {**_ref(args), "enabled": args.enabled})
    print(f"scheduled export {updated['id']} is {'enabled' if updated['enabled'] else 'disabled'}", flush=True)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    answer = _api(args).call("scheduledExport.validate", _ref(args))
    print(("ok: " if answer["ok"] else "not ok: ") + answer["message"], flush=True)
    return EXIT_OK if answer["ok"] else EXIT_FAILED


def cmd_run_now(args: argparse.Namespace) -> int:
    run = _api(args).call("scheduledExport.runNow", _ref(args))
    print(f"run {run['id']} of the window {_when(run['windowStart'])} - {_when(run['windowEnd'])}: {run['status']}")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    listing = _api(args).call("scheduledExport.runs", {**_ref(args), "limit": args.limit})
    if not listing["runs"]:
        print("no runs yet")
        return EXIT_OK
    header = ("RUN", "WINDOW START (UTC)", "WINDOW END (UTC)", "STATUS", "ROWS", "FILES", "ATTEMPTS", "ERROR")
    rows = [header]
    for run in listing["runs"]:
        files = f"{run['tablesDone']}/{run['tablesTotal']}"
        error = _cell(run["error"] or "", 60)
        rows.append(
            (
                run["id"],
                _when(run["windowStart"]),
                _when(run["windowEnd"]),
                run["status"],
                f"{run['rowsExported']:,}",
                files,
                str(run["attempts"]),
                error,
            )
        )
    widths = [max(_width(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(_pad(cell, w) for cell, w in zip(row, widths)).rstrip())
    print(f"{len(listing['runs'])} of {listing['totalCount']} runs, newest first", file=sys.stderr)
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    _api(args).call("scheduledExport.delete", _ref(args))
    print(f"scheduled export {args.id} deleted", flush=True)
    return EXIT_OK


def cmd_reseal(args: argparse.Namespace) -> None:
    """Operator: every stored secret sealed again with the current SECRETS_ENCRYPTION_KEY (after a rotation)."""
    import db
    from schemas.settings import load_settings
    from workers.secret_box import SecretBox

    settings = load_settings()
    box = SecretBox.from_settings(settings)
    moved = 0
    with db.connect(settings.DATABASE_URL) as conn, conn.transaction():
        for row in conn.execute("SELECT id, secret FROM scheduled_exports FOR UPDATE").fetchall():
            if box.is_current(row["secret"]):
                continue
            sealed = box.seal(box.open(row["secret"], row["id"]), row["id"])
            conn.execute("UPDATE scheduled_exports SET secret = %s WHERE id = %s", (sealed, row["id"]))
            moved += 1
    print(f"resealed {moved} secret(s) with the current SECRETS_ENCRYPTION_KEY", flush=True)


def add_scheduled_commands(commands: argparse._SubParsersAction) -> None:
    common = _connection_options()
    formatter = argparse.RawDescriptionHelpFormatter
    scheduled = commands.add_parser(
        "scheduled", help="scheduled exports into your own bucket: create, list, validate, run-now, runs …"
    )
    actions = scheduled.add_subparsers(dest="action", required=True)

    create = actions.add_parser(
        "create",
        parents=[common],
        formatter_class=formatter,
        epilog=f"The secret comes from ${SECRET_VARIABLE}, or is asked for.\n\n{EXIT_CODES_HELP}",
        help="a scheduled export; prints its id",
    )
    create.add_argument("--name", required=True)
    where = create.add_argument_group("destination (S3 or S3-compatible, or Azure Blob Storage)")
    where.add_argument("--s3-bucket", metavar="BUCKET")
    where.add_argument("--access-key-id", metavar="ID")
    where.add_argument("--region", default="us-east-1")
    where.add_argument("--path-style", action="store_true", help="path-style addressing (MinIO, moto …)")
    where.add_argument("--azure-container", metavar="CONTAINER")
    where.add_argument("--azure-account", metavar="ACCOUNT")
    where.add_argument("--endpoint", metavar="URL", help="an S3-compatible server, or Azurite")
    where.add_argument("--prefix", default="", help="the keys' prefix inside the bucket or container")
    create.add_argument("--tables", required=True, metavar="T1,T2", help="tables to export, comma-separated")
    create.add_argument("--format", type=str.upper, choices=list(get_args(ExportFormat)), default="PARQUET")
    create.add_argument("--compression", type=str.lower, choices=list(get_args(Compression)))
    create.add_argument("--schedule", required=True, choices=list(get_args(Schedule)))
    create.add_argument(
        "--start", default="from_today", metavar="WHEN", help="full_history, from_today (default) or a date"
    )
    create.add_argument("--disabled", action="store_true", help="create it disabled")
    create.set_defaults(run=_run(cmd_create))

    listing = actions.add_parser(
        "list", parents=[common], epilog=EXIT_CODES_HELP, help="the project's scheduled exports"
    )
    listing.set_defaults(run=_run(cmd_list))

    for name, command, help_text in (
        ("enable", cmd_enable, "enable a scheduled export (it resumes where it stopped)"),
        ("disable", cmd_enable, "disable a scheduled export"),
        ("validate", cmd_validate, "write, read back and delete a small object in its destination"),
        ("run-now", cmd_run_now, "start its next run now"),
        ("runs", cmd_runs, "its runs, newest first"),
        ("delete", cmd_delete, "delete a scheduled export (its files stay in the destination)"),
    ):
        action = actions.add_parser(name, parents=[common], epilog=EXIT_CODES_HELP, help=help_text)
        action.add_argument("id", help="the scheduled export's id")
        if name == "runs":
            action.add_argument("--limit", type=int, default=20)
        action.set_defaults(run=_run(command), enabled=name == "enable")

    reseal = actions.add_parser(
        "reseal", help="operator: seal every stored secret again with the current SECRETS_ENCRYPTION_KEY"
    )
    reseal.set_defaults(run=cmd_reseal)
