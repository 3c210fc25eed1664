"""`batch-export export` and `batch-export exports …`: the batch-export API from a terminal, for people.

These commands are a client like the browser page: they call the JSON-RPC API over HTTP with a
session token and never touch the database, so they work from any machine that can reach the API.
The query is checked against the table definitions (workers.tables, the same compiler the API runs)
before anything is sent, so a typo in a filter is a usage error naming the valid columns, not a
round trip.

Exit codes (also in `--help` and the README):
  0 success, 1 the export FAILED, 2 usage or configuration error, 3 the export was CANCELLED,
  4 the API refused the request or could not be reached, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import math
import os
import shutil
import sys
import tempfile
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn, TextIO, get_args

from pydantic import TypeAdapter, ValidationError

from schemas import BatchExportQuery, Filter
from schemas.filters import (
    ArrayOptionsOperator,
    BooleanOperator,
    DatetimeOperator,
    NullOperator,
    NumberOperator,
    OptionsOperator,
    StringOperator,
)
from workers.tables import TABLES, Column, ExportTable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 3
EXIT_API = 4
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success (with --wait: the export COMPLETED)
  1    the export FAILED (its log is printed)
  2    usage or configuration error (bad option, filter, token or project missing)
  3    the export was CANCELLED
  4    the API refused the request (UNAUTHORIZED, FORBIDDEN, NOT_FOUND, ...) or could not be reached
  130  interrupted with Ctrl-C (the export keeps running)

environment:
  BATCH_EXPORT_API_URL   the API (default: PUBLIC_BASE_URL, http://127.0.0.1:8000)
  BATCH_EXPORT_TOKEN     the session token (`batch-export user create` and the demo print one)
  BATCH_EXPORT_PROJECT   the project id
"""

FILTER_HELP = """\
filters (--filter, repeatable; all must match):
  COLUMN OPERATOR VALUE, one argument each, so quote it for the shell:
    --filter 'name contains checkout'        --filter 'timestamp >= 2026-01-01T00:00:00Z'
    --filter 'tags any of prod,beta'         --filter 'metadata.customer = acme'
    --filter 'latency > 2.5'                 --filter 'bookmarked = true'
    --filter 'release is null'               --filter 'environment none of staging'
  COLUMN is a column id or display name of the table (`metadata.KEY` for a key of a JSON object
  column); the first operator in the text ends the column. Operators: = <> > < >= <=, contains,
  "does not contain", "starts with", "ends with", "any of", "none of", "all of", "is null",
  "is not null" (which ones a column takes depends on its type; a wrong one lists the valid ones).
  Lists are comma-separated ('tags any of "a,b",c' keeps the comma of "a,b"); a date may omit the
  time (UTC midnight); "quotes" around a text value keep its spaces.
"""

FINAL_STATUSES = ("COMPLETED", "FAILED", "CANCELLED")
EXIT_BY_STATUS = {"COMPLETED": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}
DEFAULT_API_URL = "http://127.0.0.1:8000"
# batchExport.all's largest page: finding an export by id costs as few calls as possible.
LOOKUP_PAGE_SIZE = 100


class UsageError(Exception):
    """The command line itself is wrong (exit 2); the message says what would be right."""


class ApiError(Exception):
    """The API answered with a JSON-RPC error, or could not be reached (exit 4)."""

    def __init__(self, message: str, code: str, details: list[str] | None = None):
        super().__init__(message)
        self.message, self.code, self.details = message, code, details or []


# --- the API over HTTP ------------------------------------------------------------------------------


class ApiClient:
    """JSON-RPC 2.0 over HTTP with the standard library: one POST /rpc per call, a bearer token."""

    def __init__(self, base_url: str, token: str, timeout: float = 30):
        self.base_url, self.token, self.timeout = base_url, token, timeout
        self._ids = 0

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self._ids += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/rpc",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.load(response)
        except urllib.error.HTTPError as exc:
            # JSON-RPC errors come with HTTP 200; anything else is a proxy, a size limit or a crash.
            reply = _json_or_none(exc.read())
            if not isinstance(reply, dict) or "error" not in reply:
                raise ApiError(f"{method}: the API answered HTTP {exc.code} {exc.reason}", f"HTTP_{exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the API at {self.base_url}: {reason}", "UNREACHABLE") from None
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not ("error" in reply or "result" in reply):
            raise ApiError(f"{method}: the API at {self.base_url} did not answer JSON-RPC", "BAD_REPLY")
        if "error" in reply:
            raise _api_error(method, reply["error"])
        return reply["result"]

    def download(self, url: str, destination: Path) -> int:
        """Streams `url` into a temporary file beside `destination`, renamed into place when complete."""
        # The link names its own host (S3, or this API's PUBLIC_BASE_URL); it carries its own signature,
        # so the bearer token is never sent along.
        fd, partial = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    response = urllib.request.urlopen(url, timeout=self.timeout)
                except urllib.error.HTTPError as exc:
                    error = (_json_or_none(exc.read()) or {}).get("error") or {}
                    message = error.get("message") or f"HTTP {exc.code} {exc.reason}"
                    raise ApiError(f"download failed: {message}", error.get("code") or f"HTTP_{exc.code}") from None
                except (urllib.error.URLError, OSError) as exc:
                    raise ApiError(f"download failed: cannot reach {_origin(url)}: {getattr(exc, 'reason', exc)}",
                                   "UNREACHABLE") from None
                try:
                    with response:
                        while chunk := response.read(1 << 20):
                            out.write(chunk)
                            size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                except (OSError, http.client.HTTPException) as exc:
                    raise ApiError(f"download failed after {size:,} bytes: {exc}", "DOWNLOAD_FAILED") from None
            # mkstemp makes the file private (0600); a download gets the user's usual permissions.
            os.chmod(partial, 0o666 & ~_umask())
            os.replace(partial, destination)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return size


def _api_error(method: str, error: dict[str, Any]) -> ApiError:
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    code = data.get("code") or str(error.get("code"))
    details = [
        f"{'.'.join(str(p) for p in issue.get('loc', ()))}: {issue.get('msg')}"
        for issue in data.get("issues") or ()
        if isinstance(issue, dict)
    ]
    return ApiError(f"{method}: {error.get('message', 'error')}", code, details)


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- filters and order, from the command line to the wire --------------------------------------------

# The operator lists are schemas.filters' own, so the command line offers exactly what the API takes.
_STRING_OPS = get_args(StringOperator)
_NULL_OPS = get_args(NullOperator)
_OPTIONS_OPS = get_args(OptionsOperator)
_NUMBER_OPS = get_args(NumberOperator)
# On a JSON column, `=` compares text; the orderings compare numbers.
_ORDERING_OPS = tuple(op for op in _NUMBER_OPS if op not in _STRING_OPS)

# For each declared column type (workers.tables), the operators the command line offers and the
# wire filter type each one becomes. The API accepts these combinations (workers.filters'
# ACCEPTED_FILTER_TYPES); the local check below runs that same compiler before anything is sent.
CLI_OPERATORS: dict[str, dict[str, str]] = {
    "string": {**dict.fromkeys(_STRING_OPS, "string"), **dict.fromkeys(_OPTIONS_OPS, "stringOptions")},
    "stringOptions": {**dict.fromkeys(_OPTIONS_OPS, "stringOptions"), **dict.fromkeys(_STRING_OPS, "string")},
    "stringObject": {
        **dict.fromkeys(_STRING_OPS, "stringObject"),
        **dict.fromkeys(_ORDERING_OPS, "numberObject"),
        **dict.fromkeys(_OPTIONS_OPS, "categoryOptions"),
    },
    "number": dict.fromkeys(_NUMBER_OPS, "number"),
    "datetime": dict.fromkeys(get_args(DatetimeOperator), "datetime"),
    "arrayOptions": dict.fromkeys(get_args(ArrayOptionsOperator), "arrayOptions"),
    "boolean": dict.fromkeys(get_args(BooleanOperator), "boolean"),
}
for _operators in CLI_OPERATORS.values():
    _operators.update(dict.fromkeys(_NULL_OPS, "null"))

# Longest first, so `>=` is not read as `>` followed by "=...".
_SYMBOL_OPERATORS = (">=", "<=", "<>", "!=", "=", ">", "<")
_WORD_OPERATORS = ("does not contain", "contains", "starts with", "ends with", "any of", "none of", "all of",
                   "is not null", "is null")
_OPERATOR_ALIASES = {"!=": "<>"}
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")

_FILTER_ADAPTER: TypeAdapter = TypeAdapter(Filter)


@dataclass(frozen=True)
class _FilterText:
    column: str
    operator: str
    value: str


def split_filter(text: str) -> _FilterText:
    """`COLUMN OPERATOR VALUE`: the first operator after a non-empty column ends the column."""
    lowered = text.lower()
    for i in range(1, len(text)):
        for op in _SYMBOL_OPERATORS:
            if text.startswith(op, i):
                return _FilterText(text[:i].strip(), _OPERATOR_ALIASES.get(op, op), text[i + len(op):].strip())
        if not text[i - 1].isspace():
            continue
        for op in _WORD_OPERATORS:
            end = i + len(op)
            if lowered.startswith(op, i) and (end == len(text) or text[end].isspace()):
                return _FilterText(text[:i].strip(), op, text[end:].strip())
    raise UsageError(
        f"cannot read the filter {text!r}: write COLUMN OPERATOR VALUE, e.g. 'name contains foo'. "
        f"Operators: {_operator_list(op for op in _SYMBOL_OPERATORS + _WORD_OPERATORS if op not in _OPERATOR_ALIASES)}."
    )


def _operator_list(operators: Iterable[str]) -> str:
    return ", ".join(f'"{op}"' if " " in op else op for op in dict.fromkeys(operators))


def find_column(table: ExportTable, name: str) -> Column | None:
    """A filterable column by id, alias or display name; case does not matter when unambiguous."""
    column = table.find_column(name)
    if column is not None and column.filter:
        return column
    matches = {c for c in table.filterable_columns if name.casefold() in (n.casefold() for n in c.names)}
    return matches.pop() if len(matches) == 1 else None


def _describe_columns(table: ExportTable) -> str:
    """`userId "User ID" (string), latency "Latency (s)" (number), …`: what a filter may name."""
    described = []
    for c in table.filterable_columns:
        display = f' "{c.display}"' if c.display and c.display.casefold() != c.key.casefold() else ""
        described.append(f"{c.key}{display} ({c.filter})")
    return ", ".join(described)


def parse_filter(table: ExportTable, text: str) -> dict[str, Any]:
    """One `--filter` argument as a wire Filter of `table`; UsageError names what would be valid."""
    parts = split_filter(text)
    column, key = find_column(table, parts.column), None
    if column is None and "." in parts.column:
        head, key = parts.column.split(".", 1)
        column = find_column(table, head.strip())
        key = key.strip()
    if column is None:
        raise UsageError(
            f"unknown filter column {parts.column!r} for table {table.name}. "
            f"Valid columns: {_describe_columns(table)}."
        )
    object_columns = [c.key for c in table.filterable_columns if c.filter == "stringObject"]
    if key is not None and column.filter != "stringObject":
        raise UsageError(
            f"{column.key} is not a JSON object column, so {parts.column!r} cannot name a key in it"
            + (f" (object columns of {table.name}: {', '.join(object_columns)})." if object_columns else ".")
        )
    operators = CLI_OPERATORS[column.filter]
    wire_type = operators.get(parts.operator)
    if wire_type is None:
        raise UsageError(
            f"{column.key} is a {column.filter} column of {table.name}: it takes "
            f"{_operator_list(operators)}, not {parts.operator!r}."
        )
    if column.filter == "stringObject" and wire_type != "null" and not key:
        raise UsageError(f"{column.key} is a JSON object: name the key to test, e.g. '{column.key}.customer = acme'.")

    wire: dict[str, Any] = {"column": column.key, "type": wire_type, "operator": parts.operator}
    if key is not None and wire_type != "null":
        wire["key"] = key
    wire["value"] = _filter_value(column, wire_type, parts)
    try:
        model = _FILTER_ADAPTER.validate_python(wire)
    except ValidationError as exc:
        problem = "; ".join(err["msg"] for err in exc.errors())
        raise UsageError(f"filter {text!r}: {problem}") from None
    return model.model_dump(mode="json", exclude_none=True)


def _filter_value(column: Column, wire_type: str, parts: _FilterText) -> Any:
    value = parts.value
    where = f"filter on {column.key} ({column.filter})"
    if wire_type == "null":
        if value:
            raise UsageError(f"{where}: {parts.operator!r} takes no value, got {value!r}.")
        return ""
    if not value:
        raise UsageError(f"{where}: {parts.operator!r} needs a value after it.")
    if wire_type in ("stringOptions", "categoryOptions", "arrayOptions"):
        options = [_unquote(v.strip()) for v in next(csv.reader([value], skipinitialspace=True))]
        options = [v for v in options if v != ""]
        if not options:
            raise UsageError(f"{where}: {parts.operator!r} needs one or more comma-separated values.")
        return options
    if wire_type in ("number", "numberObject"):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise UsageError(f"{where}: {value!r} is not a number.")
        return number
    if wire_type == "datetime":
        return _parse_datetime(value, where)
    if wire_type == "boolean":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise UsageError(f"{where}: {value!r} is not true or false.")
    return _unquote(value)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _parse_datetime(value: str, where: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{where}: {value!r} is not a date or time; write ISO 8601, e.g. 2026-01-01 or 2026-01-01T12:00:00Z."
        ) from None
    # A time without a zone means UTC, as everywhere in the exported files.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


def parse_order_by(table: ExportTable, text: str) -> dict[str, str]:
    """`COLUMN[:ASC|DESC]` (ascending when no direction is given)."""
    name, _, direction = text.rpartition(":") if ":" in text else (text, ":", "ASC")
    direction = direction.strip().upper()
    if direction not in ("ASC", "DESC"):
        raise UsageError(f"--order-by {text!r}: the direction is ASC or DESC, e.g. timestamp:DESC.")
    column = table.find_column(name.strip())
    if column is None:
        lowered = {c for c in table.columns if name.strip().casefold() in (n.casefold() for n in c.names)}
        column = lowered.pop() if len(lowered) == 1 else None
    if column is None or not column.sortable:
        raise UsageError(
            f"cannot order {table.name} by {name.strip()!r}. Sortable columns: {', '.join(table.sortable_names())}."
        )
    return {"column": column.key, "order": direction}


def build_query(args: argparse.Namespace) -> dict[str, Any]:
    """The export's query from the command line, checked by the same compiler the API and worker use."""
    from workers.filters import InvalidExportQuery, validate_query

    table = TABLES[args.table]
    query: dict[str, Any] = {
        "tableName": table.name,
        "filter": [parse_filter(table, text) for text in args.filter],
        "orderBy": parse_order_by(table, args.order_by) if args.order_by else None,
    }
    if args.search is not None:
        query["searchQuery"] = args.search
        if args.search_in:
            query["searchType"] = list(dict.fromkeys(args.search_in))
    try:
        validate_query(BatchExportQuery.model_validate(query))
    except ValidationError as exc:
        raise UsageError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    except InvalidExportQuery as exc:
        raise UsageError(exc.message) from None
    return query


# --- progress --------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(status: str, rows: int, total: int | None, rate: float | None, elapsed: float,
                  bar_width: int = 24) -> str:
    """One line: status, a bar and percentage (when the total is known), rows, rate, ETA or elapsed."""
    parts = [f"{status:<10}"]
    if status == "QUEUED":
        parts.append(f"waiting for a worker  {_duration(elapsed)}")
        return "  ".join(parts)
    if total:
        fraction = min(rows / total, 1.0)
        filled = int(fraction * bar_width)
        parts.append(f"[{'#' * filled}{'.' * (bar_width - filled)}] {fraction * 100:5.1f}%")
        parts.append(f"{rows:,} / {total:,} rows")
    else:
        parts.append(f"{rows:,} rows")
    if status == "PROCESSING":
        if rate:
            parts.append(f"{rate:,.0f} rows/s")
            if total and total > rows:
                parts.append(f"ETA {_duration((total - rows) / rate)}")
        parts.append(f"elapsed {_duration(elapsed)}")
    else:
        parts.append(f"in {_duration(elapsed)}")
    return "  ".join(parts)


class ProgressDisplay:
    """The wait's progress on stderr: redrawn in place on a terminal, a plain line now and then otherwise."""

    RATE_WINDOW_SECONDS = 10.0
    PLAIN_EVERY_SECONDS = 5.0

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic):
        self.stream, self.clock = stream, clock
        self.tty = stream.isatty()
        self.started = clock()
        self.samples: deque[tuple[float, int]] = deque()
        self.last_status: str | None = None
        self.last_plain = -math.inf
        self.drawn = False

    def rate(self, now: float, rows: int) -> float | None:
        self.samples.append((now, rows))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.RATE_WINDOW_SECONDS:
            self.samples.popleft()
        (t0, r0) = self.samples[0]
        if now - t0 <= 0 or rows <= r0:
            return None
        return (rows - r0) / (now - t0)

    def update(self, export: dict[str, Any]) -> None:
        now = self.clock()
        status, progress = export["status"], export["progress"]
        rows, total = progress["rowsExported"], progress["rowsTotal"]
        if status == "COMPLETED" and total is None:
            total = rows
        if status != self.last_status:
            self.samples.clear()
        line = progress_line(status, rows, total, self.rate(now, rows), now - self.started)
        final = status in FINAL_STATUSES
        if self.tty:
            width = max(shutil.get_terminal_size((100, 24)).columns - 1, 20)
            self.stream.write("\r" + line[:width] + "\x1b[K" + ("\n" if final else ""))
            self.drawn = not final
        elif final or status != self.last_status or now - self.last_plain >= self.PLAIN_EVERY_SECONDS:
            self.stream.write(line + "\n")
            self.last_plain = now
        self.stream.flush()
        self.last_status = status

    def interrupt(self) -> None:
        """Ends a half-drawn bar so the next message starts on its own line."""
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


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


def wait_and_deliver(args: argparse.Namespace, api: ApiClient, project: str, export: dict[str, Any],
                     output: Path | None) -> int:
    """Polls until the export finishes, then prints its link or downloads it; returns the exit code."""
    display = ProgressDisplay(sys.stderr)
    try:
        while True:
            display.update(export)
            if export["status"] in FINAL_STATUSES:
                break
            time.sleep(args.interval)
            export = find_export(api, project, export["id"])
    except KeyboardInterrupt:
        display.interrupt()
        _say(
            f"stopped waiting; export {export['id']} is still {export['status']} and keeps going without you.\n"
            f"  follow it again: {_hint(args, project, export['id'], 'wait')}\n"
            f"  cancel it:       {_hint(args, project, export['id'], 'cancel')}"
        )
        return EXIT_INTERRUPTED
    return deliver(args, api, project, export, output)


def deliver(args: argparse.Namespace, api: ApiClient, project: str, export: dict[str, Any], output: Path | None) -> int:
    status = export["status"]
    if status == "FAILED":
        _say(f"export {export['id']} FAILED: {export.get('log') or 'no reason recorded'}")
        return EXIT_FAILED
    if status == "CANCELLED":
        _say(f"export {export['id']} was CANCELLED.")
        return EXIT_CANCELLED
    if status != "COMPLETED":
        raise ApiError(f"export {export['id']} is {status}, not finished: nothing to download yet", "PRECONDITION_FAILED")
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
        _say(f"download interrupted; nothing was written. Try again: {_hint(args, project, export['id'], 'download')}"
             f" --output {_shell_quote(str(output))}")
        return EXIT_INTERRUPTED
    _say(f"downloaded {size:,} bytes")
    print(output, flush=True)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    project = _project(args)
    query = build_query(args)
    output = _output_path(args.output)
    api = _api(args)
    name = args.name or f"{args.table} {datetime.now(timezone.utc):%Y-%m-%d %H:%M} (CLI)"
    export = api.call("batchExport.create", {"projectId": project, "name": name, "query": query, "format": args.format})
    if not (args.wait or output):
        _say(f"created export {export['id']} ({export['status']}); follow it: {_hint(args, project, export['id'], 'wait')}")
        print(export["id"], flush=True)
        return EXIT_OK
    _say(f"created export {export['id']} \"{export['name']}\"")
    return wait_and_deliver(args, api, project, export, output)


def cmd_wait(args: argparse.Namespace) -> int:
    project, output = _project(args), _output_path(args.output)
    api = _api(args)
    return wait_and_deliver(args, api, project, find_export(api, project, args.id), output)


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
    user = export.get("user") or {}
    expires = "-" if export["expiresAt"] is None else "expired" if export["isExpired"] else _when(export["expiresAt"])
    return (
        export["id"],
        _cell(export["name"], 40),
        export["query"]["tableName"],
        export["format"],
        export["status"],
        shown,
        _cell(user.get("name") or user.get("id") or "-", 24),
        _when(export["createdAt"]),
        expires,
    )


def _when(value: str) -> str:
    return datetime.fromisoformat(value).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


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
    group.add_argument("--api", metavar="URL", help="the API's base URL (env BATCH_EXPORT_API_URL; default PUBLIC_BASE_URL)")
    group.add_argument("--token", help="session token (env BATCH_EXPORT_TOKEN)")
    group.add_argument("--project", metavar="ID", help="project id (env BATCH_EXPORT_PROJECT)")
    return options


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", metavar="FILE", help="download the finished file to FILE (implies --wait)")
    parser.add_argument("--interval", type=_positive_float, default=1.0, metavar="SECONDS",
                        help="how often to ask the API for progress (default 1)")


def add_client_commands(commands: argparse._SubParsersAction) -> None:
    """Registers `export` and `exports {list,wait,download,cancel}` on the main parser's subcommands."""
    common = _connection_options()
    formatter = argparse.RawDescriptionHelpFormatter

    export = commands.add_parser(
        "export", parents=[common], formatter_class=formatter, epilog=FILTER_HELP + "\n" + EXIT_CODES_HELP,
        help="create an export through the API; --wait shows progress, --output downloads it",
        description="Create an export through the API. Without --wait, prints the export's id (last line); "
                    "with --wait, shows progress on stderr and prints the download link, or with --output "
                    "downloads the file and prints its path.",
    )
    export.add_argument("--table", required=True, choices=list(TABLES), metavar="TABLE",
                        help=f"the table to export: {', '.join(TABLES)}")
    export.add_argument("--format", required=True, type=str.upper, choices=["CSV", "JSON", "JSONL"])
    export.add_argument("--name", help="the export's name (default: table and time)")
    export.add_argument("--filter", action="append", default=[], metavar="'COLUMN OP VALUE'",
                        help="a filter (repeatable); see below")
    export.add_argument("--search", metavar="TEXT", help="case-insensitive search, as the table's search box")
    export.add_argument("--search-in", action="append", choices=["id", "content"],
                        help="where --search looks: id (ids and names, the default) and/or content (input, output, metadata)")
    export.add_argument("--order-by", metavar="COLUMN[:ASC|DESC]", help="row order (default: the table's own)")
    export.add_argument("--wait", action="store_true", help="wait for the export, showing progress on stderr")
    _wait_options(export)
    export.set_defaults(run=_run(cmd_export))

    exports = commands.add_parser("exports", help="list, follow, download or cancel exports through the API")
    actions = exports.add_subparsers(dest="action", required=True)

    listing = actions.add_parser("list", parents=[common], formatter_class=formatter, epilog=EXIT_CODES_HELP,
                                 help="the project's exports, newest first, as a table")
    listing.add_argument("--page", type=_page, default=1, help="page number, 1 = newest (default 1)")
    listing.add_argument("--limit", type=_limit, default=50, help="exports per page, 1..100 (default 50)")
    listing.set_defaults(run=_run(cmd_list))

    wait = actions.add_parser("wait", parents=[common], formatter_class=formatter, epilog=EXIT_CODES_HELP,
                              help="follow an export's progress until it finishes")
    wait.add_argument("id", help="the export's id")
    _wait_options(wait)
    wait.set_defaults(run=_run(cmd_wait))

    download = actions.add_parser("download", parents=[common], formatter_class=formatter, epilog=EXIT_CODES_HELP,
                                  help="print a fresh download link of a finished export, or download it with --output")
    download.add_argument("id", help="the export's id")
    download.add_argument("--output", "-o", metavar="FILE", help="write the file here instead of printing the link")
    download.set_defaults(run=_run(cmd_download))

    cancel = actions.add_parser("cancel", parents=[common], formatter_class=formatter, epilog=EXIT_CODES_HELP,
                                help="cancel a queued or running export")
    cancel.add_argument("id", help="the export's id")
    cancel.set_defaults(run=_run(cmd_cancel))
