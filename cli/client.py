"""`batch-export export` and `batch-export exports …`: the batch-export API from a terminal, for people.

These commands are a client like the browser page: they call the JSON-RPC API over HTTP with a
session token and never touch the database, so they work from any machine that can reach the API.

Exit codes (also in `--help` and the README):
  0 success, 1 the export FAILED, 2 usage or configuration error, 3 the export was CANCELLED,
  4 the API refused the request or could not be reached, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, get_args

from cli.api_client import ApiClient, StreamUnavailable
from cli.errors import (
    EXIT_API,
    EXIT_CANCELLED,
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    ApiError,
    UsageError,
)
from cli.filter_text import FILTER_HELP, build_query
from cli.progress import ProgressDisplay, parts_text
from schemas import FINAL_STATUSES, Compression, ExportFormat
from workers.tables import TABLES

# batchExport.all's largest page: finding an export by id costs as few calls as possible.
LOOKUP_PAGE_SIZE = 100


# --- the commands ----------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _api(args: argparse.Namespace) -> ApiClient:
    url = args.api or os.environ.get("BATCH_EXPORT_API_URL") or _default_api_url()
    url = url.rstrip("/")
    if url.endswith("/rpc"):
        url = url[: -len("/rpc")]
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"the API URL must be http(s)://host[:port], got {url!r} (--api / BATCH_EXPORT_API_URL).")
    token = args.token or os.environ.get("BATCH_EXPORT_TOKEN")
    if not token:
        raise UsageError(
            "no session token: pass --token or set BATCH_EXPORT_TOKEN "
            "(`make demo` prints one; `batch-export user create` makes one)."
        )
    return ApiClient(url, token.strip())


def _default_api_url() -> str:
    # The service's own public address when this machine runs it (the demo), else the local default.
    from schemas.settings import SettingsError, load_settings

    try:
        return load_settings().PUBLIC_BASE_URL
    except SettingsError as exc:
        raise UsageError(f"{exc} (or pass --api / set BATCH_EXPORT_API_URL)") from None


def _project(args: argparse.Namespace) -> str:
    project = args.project or os.environ.get("BATCH_EXPORT_PROJECT")
    if not project:
        raise UsageError("no project: pass --project or set BATCH_EXPORT_PROJECT (`make demo` prints its id).")
    return project.strip()


def _output_path(value: str | None) -> Path | None:
    """Checked before an export is created, so a typo in the folder does not waste one."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"--output {value!r} is a folder; name the file to write, e.g. {path / 'export.csv'}.")
    if not path.parent.is_dir():
        raise UsageError(f"--output {value!r}: the folder {str(path.parent)!r} does not exist.")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"--output {value!r}: cannot write into {str(path.parent)!r}.")
    return path.resolve()


def _hint(args: argparse.Namespace, project: str, export_id: str, action: str) -> str:
    parts = ["batch-export", "exports", action]
    if args.api:
        parts += ["--api", args.api]
    return " ".join([*parts, "--project", _shell_quote(project), _shell_quote(export_id)])


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def find_export(api: ApiClient, project: str, export_id: str) -> dict[str, Any]:
    """The export's current record. batchExport.all is the only lookup: newest first, so page 0 is usual."""
    page = 0
    while True:
        listing = api.call("batchExport.all", {"projectId": project, "page": page, "limit": LOOKUP_PAGE_SIZE})
        for export in listing["exports"]:
            if export["id"] == export_id:
                return export
        page += 1
        if page * LOOKUP_PAGE_SIZE >= listing["totalCount"] or not listing["exports"]:
            raise ApiError(f"no export with id {export_id!r} in project {project!r}", "NOT_FOUND")


def wait_and_deliver(
    args: argparse.Namespace, api: ApiClient, project: str, export: dict[str, Any], output: Path | None
) -> int:
    """Follows the export until it finishes, then prints its link or downloads it; returns the exit code."""
    display = ProgressDisplay(sys.stderr)
    try:
        display.update(export)
        if export["status"] not in FINAL_STATUSES:
            for changed in followed(args, api, project, export["id"]):
                export = changed
                display.update(export)
                if export["status"] in FINAL_STATUSES:
                    break
    except KeyboardInterrupt:
        display.interrupt()
        _say(
            f"stopped waiting; export {export['id']} is still {export['status']} and keeps going without you.\n"
            f"  follow it again: {_hint(args, project, export['id'], 'follow')}\n"
            f"  cancel it:       {_hint(args, project, export['id'], 'cancel')}"
        )
        return EXIT_INTERRUPTED
    return deliver(args, api, project, export, output)


def followed(args: argparse.Namespace, api: ApiClient, project: str, export_id: str) -> Iterator[dict[str, Any]]:
    """The export each time it changes: pushed by the API's batchExport.onChange stream (the first event
    is its state now), or, from an API that cannot stream, asked for every --interval seconds."""
    try:
        yield from api.follow("batchExport.onChange", {"projectId": project, "batchExportId": export_id})
        return
    except StreamUnavailable:
        pass
    while True:
        time.sleep(args.interval)
        yield find_export(api, project, export_id)


def deliver(args: argparse.Namespace, api: ApiClient, project: str, export: dict[str, Any], output: Path | None) -> int:
    status = export["status"]
    if status == "FAILED":
        _say(f"export {export['id']} FAILED: {export.get('log') or 'no reason recorded'}")
        return EXIT_FAILED
    if status == "CANCELLED":
        _say(f"export {export['id']} was CANCELLED.")
        return EXIT_CANCELLED
    if status != "COMPLETED":
        raise ApiError(
            f"export {export['id']} is {status}, not finished: nothing to download yet", "PRECONDITION_FAILED"
        )
    if export.get("log"):
        _say(export["log"])
    link = api.call("batchExport.downloadUrl", {"projectId": project, "batchExportId": export["id"]})
    if output is None:
        _say(f"download link (valid until {link['expiresAt']}):")
        print(link["url"], flush=True)
        return EXIT_OK
    try:
        size = api.download(link["url"], output)
    except KeyboardInterrupt:
        _say(
            f"download interrupted; nothing was written. Try again: {_hint(args, project, export['id'], 'download')}"
            f" --output {_shell_quote(str(output))}"
        )
        return EXIT_INTERRUPTED
    expected = export.get("sha256")
    if expected:
        actual = _sha256(output)
        if actual != expected:
            _say(
                f"downloaded {size:,} bytes to {output}, but their SHA-256 is {actual}, not the export's {expected}:"
                f" the file is damaged. Download it again: {_hint(args, project, export['id'], 'download')}"
            )
            return EXIT_FAILED
        _say(f"downloaded {size:,} bytes, SHA-256 {actual} (checked)")
    else:
        _say(f"downloaded {size:,} bytes")
    print(output, flush=True)
    return EXIT_OK


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cmd_export(args: argparse.Namespace) -> int:
    project = _project(args)
    query = build_query(args)
    output = _output_path(args.output)
    api = _api(args)
    name = args.name or f"{args.table} {datetime.now(UTC):%Y-%m-%d %H:%M} (CLI)"
    params = {
        "projectId": project,
        "name": name,
        "query": query,
        "format": args.format,
    }
    if args.compression:
        params["compression"] = args.compression
    if args.columns:
        params["columns"] = [c.strip() for c in args.columns.split(",")]
    export = api.call("batchExport.create", params)
    if not (args.wait or output):
        _say(
            f"created export {export['id']} ({export['status']}); follow it: {_hint(args, project, export['id'], 'follow')}"
        )
        print(export["id"], flush=True)
        return EXIT_OK
    _say(f'created export {export["id"]} "{export["name"]}"')
    return wait_and_deliver(args, api, project, export, output)


def cmd_wait(args: argparse.Namespace) -> int:
    project, output = _project(args), _output_path(args.output)
    api = _api(args)
    return wait_and_deliver(args, api, project, find_export(api, project, args.id), output)


def cmd_follow(args: argparse.Namespace) -> int:
    """`exports follow ID` waits for one export (as `exports wait`); without an id, it prints every change
    of the project's exports, one line each, until interrupted."""
    if args.id is not None:
        return cmd_wait(args)
    project = _project(args)
    api = _api(args)

    def opened() -> None:
        _say(f"following the exports of project {project} live; Ctrl-C to stop")

    try:
        for export in api.follow("batchExport.onChange", {"projectId": project}, on_open=opened):
            print("  ".join(_change_line(export)), flush=True)
    except StreamUnavailable:
        raise ApiError("this API cannot stream changes (it has no batchExport.onChange)", "NOT_FOUND") from None
    except KeyboardInterrupt:
        _say("stopped following")
        return EXIT_INTERRUPTED
    return EXIT_OK


def _change_line(export: dict[str, Any]) -> tuple[str, ...]:
    """One change: when, which export, its status and progress (as `exports list` shows them)."""
    row = _list_row(export)
    return (_when(export["updatedAt"]), row[0], row[1], row[4], row[5])


def cmd_download(args: argparse.Namespace) -> int:
    project, output = _project(args), _output_path(args.output)
    api = _api(args)
    return deliver(args, api, project, find_export(api, project, args.id), output)


def cmd_cancel(args: argparse.Namespace) -> int:
    project = _project(args)
    export = _api(args).call("batchExport.cancel", {"projectId": project, "batchExportId": args.id})
    print(f"export {export['id']} is {export['status']}", flush=True)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    project = _project(args)
    api = _api(args)
    listing = api.call("batchExport.all", {"projectId": project, "page": args.page - 1, "limit": args.limit})
    exports, total = listing["exports"], listing["totalCount"]
    if not exports:
        print("no exports in this project yet" if total == 0 else f"page {args.page} is empty ({total} exports)")
        return EXIT_OK
    header = ("ID", "NAME", "TABLE", "FORMAT", "STATUS", "PROGRESS", "CREATED BY", "CREATED AT (UTC)", "EXPIRES (UTC)")
    rows = [header, *(_list_row(e) for e in exports)]
    widths = [max(_width(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(_pad(cell, w) for cell, w in zip(row, widths)).rstrip())
    first = (args.page - 1) * args.limit + 1
    more = f"; next: --page {args.page + 1}" if first - 1 + len(exports) < total else ""
    _say(f"exports {first}-{first + len(exports) - 1} of {total}, newest first{more}")
    return EXIT_OK


def _list_row(export: dict[str, Any]) -> tuple[str, ...]:
    progress = export["progress"]
    rows, total = progress["rowsExported"], progress["rowsTotal"]
    if export["status"] == "QUEUED":
        shown = "-"
    elif total:
        shown = f"{rows:,}/{total:,} {min(rows / total, 1) * 100:.0f}%"
    else:
        shown = f"{rows:,} rows"
    if written := parts_text(progress.get("partsDone", 0), progress.get("partsTotal", 1)):
        shown = f"{shown} {written}"
    user = export.get("user") or {}
    expires = "-" if export["expiresAt"] is None else "expired" if export["isExpired"] else _when(export["expiresAt"])
    return (
        export["id"],
        _cell(export["name"], 40),
        export["query"]["tableName"],
        export["format"]
        if export.get("compression", "none") == "none"
        else f"{export['format']}+{export['compression']}",
        export["status"],
        shown,
        _cell(user.get("name") or user.get("id") or "-", 24),
        _when(export["createdAt"]),
        expires,
    )


def _when(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(text: str, limit: int) -> str:
    # Names are user input: control characters would break the table (or the terminal).
    clean = "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def _width(text: str) -> int:
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


# --- argparse --------------------------------------------------------------------------------------


def _run(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], NoReturn]:
    """Turns the command's outcome into the documented exit code; errors are words, never tracebacks."""

    def run(args: argparse.Namespace) -> NoReturn:
        try:
            code = command(args)
        except UsageError as exc:
            _say(f"batch-export: {exc}")
            code = EXIT_USAGE
        except ApiError as exc:
            _say(f"batch-export: {exc.message} ({exc.code})")
            for detail in exc.details:
                _say(f"  {detail}")
            code = EXIT_API
        except KeyboardInterrupt:
            _say("batch-export: interrupted")
            code = EXIT_INTERRUPTED
        raise SystemExit(code)

    return run


def _positive_float(text: str) -> float:
    value = float(text)
    if not (0 < value <= 3600):
        raise argparse.ArgumentTypeError("must be between 0 and 3600 seconds")
    return value


def _page(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("pages start at 1")
    return value


def _limit(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be 1..100")
    return value


def _connection_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("connection")
    group.add_argument(
        "--api", metavar="URL", help="the API's base URL (env BATCH_EXPORT_API_URL; default PUBLIC_BASE_URL)"
    )
    group.add_argument("--token", help="session token (env BATCH_EXPORT_TOKEN)")
    group.add_argument("--project", metavar="ID", help="project id (env BATCH_EXPORT_PROJECT)")
    return options


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", metavar="FILE", help="download the finished file to FILE (implies --wait)")
    parser.add_argument(
        "--interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often to ask for progress when the API cannot push it (an API without live streams; default 1)",
    )


def add_client_commands(commands: argparse._SubParsersAction) -> None:
    """Registers `export` and `exports {list,follow,wait,download,cancel}` on the main parser's subcommands."""
    common = _connection_options()
    formatter = argparse.RawDescriptionHelpFormatter

    export = commands.add_parser(
        "export",
        parents=[common],
        formatter_class=formatter,
        epilog=FILTER_HELP + "\n" + EXIT_CODES_HELP,
        help="create an export through the API; --wait shows progress, --output downloads it",
        description="Create an export through the API. Without --wait, prints the export's id (last line); "
        "with --wait, shows progress on stderr and prints the download link, or with --output "
        "downloads the file and prints its path.",
    )
    export.add_argument(
        "--table",
        required=True,
        choices=list(TABLES),
        metavar="TABLE",
        help=f"the table to export: {', '.join(TABLES)}",
    )
    export.add_argument("--format", required=True, type=str.upper, choices=list(get_args(ExportFormat)))
    export.add_argument(
        "--compression",
        type=str.lower,
        choices=list(get_args(Compression)),
        default=None,
        help="compress the file while it is written (.gz, .zst); for PARQUET the column codec"
        " (default: none for text, zstd for PARQUET)",
    )
    export.add_argument(
        "--columns",
        metavar="ID,NAME,...",
        help="only these columns, in this order: ids or display names, comma-separated (default: all)",
    )
    export.add_argument("--name", help="the export's name (default: table and time)")
    export.add_argument(
        "--filter", action="append", default=[], metavar="'COLUMN OP VALUE'", help="a filter (repeatable); see below"
    )
    export.add_argument("--search", metavar="TEXT", help="case-insensitive search, as the table's search box")
    export.add_argument(
        "--search-in",
        action="append",
        choices=["id", "content"],
        help="where --search looks: id (ids and names, the default) and/or content (input, output, metadata)",
    )
    export.add_argument("--order-by", metavar="COLUMN[:ASC|DESC]", help="row order (default: the table's own)")
    export.add_argument("--wait", action="store_true", help="wait for the export, showing progress on stderr")
    _wait_options(export)
    export.set_defaults(run=_run(cmd_export))

    exports = commands.add_parser("exports", help="list, follow, download or cancel exports through the API")
    actions = exports.add_subparsers(dest="action", required=True)

    listing = actions.add_parser(
        "list",
        parents=[common],
        formatter_class=formatter,
        epilog=EXIT_CODES_HELP,
        help="the project's exports, newest first, as a table",
    )
    listing.add_argument("--page", type=_page, default=1, help="page number, 1 = newest (default 1)")
    listing.add_argument("--limit", type=_limit, default=50, help="exports per page, 1..100 (default 50)")
    listing.set_defaults(run=_run(cmd_list))

    follow = actions.add_parser(
        "follow",
        parents=[common],
        formatter_class=formatter,
        epilog=EXIT_CODES_HELP,
        help="follow an export's progress live until it finishes (or, without an id, every change of the project's exports)",
        description="With an id: show the export's progress as the API pushes it, then print its link or, with"
        " --output, download it. Without an id: print a line for every change of the project's exports"
        " (created, started, progress, finished) until Ctrl-C.",
    )
    follow.add_argument("id", nargs="?", help="the export's id (default: every export of the project)")
    _wait_options(follow)
    follow.set_defaults(run=_run(cmd_follow))

    wait = actions.add_parser(
        "wait",
        parents=[common],
        formatter_class=formatter,
        epilog=EXIT_CODES_HELP,
        help="the same as `follow ID`: follow an export's progress until it finishes",
    )
    wait.add_argument("id", help="the export's id")
    _wait_options(wait)
    wait.set_defaults(run=_run(cmd_wait))

    download = actions.add_parser(
        "download",
        parents=[common],
        formatter_class=formatter,
        epilog=EXIT_CODES_HELP,
        help="print a fresh download link of a finished export, or download it with --output",
    )
    download.add_argument("id", help="the export's id")
    download.add_argument("--output", "-o", metavar="FILE", help="write the file here instead of printing the link")
    download.set_defaults(run=_run(cmd_download))

    cancel = actions.add_parser(
        "cancel",
        parents=[common],
        formatter_class=formatter,
        epilog=EXIT_CODES_HELP,
        help="cancel a queued or running export",
    )
    cancel.add_argument("id", help="the export's id")
    cancel.set_defaults(run=_run(cmd_cancel))
