"""The terminal client's exit codes and the two errors its commands raise: usage, and the API's refusal."""

from __future__ import annotations

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


class UsageError(Exception):
    """The command line itself is wrong (exit 2); the message says what would be right."""


class ApiError(Exception):
    """The API answered with a JSON-RPC error, or could not be reached (exit 4)."""

    def __init__(self, message: str, code: str, details: list[str] | None = None):
        super().__init__(message)
        self.message, self.code, self.details = message, code, details or []
