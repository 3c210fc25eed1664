"""The service's log lines: one handler for every process, the ids a line is about, and no secret in any of them.

`configure_logging` is the one place logging is set up (the CLI's commands, the API under uvicorn,
the worker, and its forked work horse, which inherits it). `LOG_FORMAT=text` writes the lines people
read in a terminal; `json` writes one JSON object per line for a log collector, with the ids of the
request or export the line belongs to (`log_context`). Both redact secrets the service knows of
and the shapes secrets take (bearer tokens, link signatures, URL passwords): a line logged by
a library or an exception's text is not under our control.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlparse

from schemas.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The ids of the request or job being handled, on every line logged meanwhile (in async code
# too: each task runs in a copy of the context it was created in).
_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("log_fields", default=MappingProxyType({}))


class log_context:
    """Adds `fields` (camelCase, as the lines show them; None values are left out) to every line
    logged inside the block, in this thread or task and in those it starts (see JobThread).

    A class rather than a generator-based context manager: the API enters two per call."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self._token: contextvars.Token[Mapping[str, Any]] | None = None

    def __enter__(self) -> None:
        self._token = _fields.set({**_fields.get(), **self._fields})

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _fields.reset(self._token)


def log_fields() -> Mapping[str, Any]:
    """The fields of the current log context."""
    return _fields.get()


class JobThread(threading.Thread):
    """A helper thread of a job that logs with the job's ids: a new thread starts with an empty
    context, so this one runs `work` in a copy of the context of the code that created it."""

    def __init__(self, name: str):
        super().__init__(name=name, daemon=True)
        self._context = contextvars.copy_context()

    def run(self) -> None:
        self._context.run(self.work)

    def work(self) -> None:
        raise NotImplementedError


# --- secrets ----------------------------------------------------------------------------------------

_MASK = "[redacted]"
# The shapes of secrets whatever their value: a session token, an Authorization header's credentials,
# a signature in a link (ours `sig=`, S3's presigned `X-Amz-Signature=`), the password in a URL.
_SECRET_SHAPES = (
    (re.compile(r"\bbx_[A-Za-z0-9_\-]{8,}"), _MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{16,}"), rf"\1 {_MASK}"),
    (
        re.compile(r"(?i)\b(sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token)=[^&\s\"']+"),
        rf"\1={_MASK}",
    ),
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), rf"\1{_MASK}@"),
)


class Redactor:
    """Removes from a log line every secret value it was given and everything shaped like a secret."""

    def __init__(self, values: Iterable[str] = ()):
        # Longest first, so a secret that contains another is removed whole.
        self.values = sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, _MASK)
        for pattern, replacement in _SECRET_SHAPES:
            text = pattern.sub(replacement, text)
        return text


def secret_values(settings: Settings) -> list[str]:
    """The secrets in the settings: SECRET_KEY and the passwords in the database's and Redis's URLs."""
    values = [settings.SECRET_KEY]
    for url in (settings.DATABASE_URL, settings.REDIS_URL):
        password = urlparse(url).password
        if password:
            values += [password, unquote(password)]
    return values


# --- formats ----------------------------------------------------------------------------------------

# RQ colours parts of its lines when stdout is a terminal; a JSON line carries the words only.
_TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


class TextFormatter(logging.Formatter):
    """The human-readable line (LOG_FORMAT=text): time, level, logger, message, then any traceback."""

    def __init__(self, redact: Redactor):
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json): a traceback is a field, never lines of its own."""

    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(_TERMINAL_COLOURS.sub("", record.getMessage())),
        }
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = self.redact(record.exc_text)
        if record.stack_info:
            line["stack"] = self.redact(self.formatStack(record.stack_info))
        # The context's ids never overwrite the line's own keys.
        for key, value in log_fields().items():
            line.setdefault(key, value)
        return json.dumps(line, ensure_ascii=False, default=str)


# Loggers that come with handlers of their own (uvicorn's when it configures itself); theirs would
# write lines in another format beside ours, so they hand their records to the root handler.
_LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "rq.worker", "rq.job", "rq.scheduler")


def configure_logging(settings: Settings | None = None, level: int = logging.INFO) -> None:
    """Every line of this process through one handler on stderr, in the format LOG_FORMAT names
    (text without settings: a command that has not read them yet, or never does).

    Safe to call again (the API under `serve` is configured by the CLI and again by the app): the
    handler is replaced, never added twice. RQ's worker adds its own handlers only to a logger
    without one in its hierarchy, so with this root handler in place it adds none.
    """
    redact = Redactor(secret_values(settings) if settings is not None else ())
    json_lines = settings is not None and settings.LOG_FORMAT == "json"
    formatter: logging.Formatter = JsonFormatter(redact) if json_lines else TextFormatter(redact)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for old in library.handlers[:]:
            library.removeHandler(old)
        library.propagate = True
    # httpx logs every request at INFO: each (re)connection of the terminal client's event stream
    # would print a line among its progress.
    logging.getLogger("httpx").setLevel(logging.WARNING)
