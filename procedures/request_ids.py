"""The id of every HTTP request: the caller's `X-Request-ID` when it is sane, else a new one; on
every line logged while the request is handled, and echoed in the response's `X-Request-ID`.

A proxy in front of the API (or a client) that sends its own id can then find the API's lines
about its request; an id that is too long or not printable could forge or flood log lines, so it
is replaced, not trusted.
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workers.logs import log_context, log_fields

log = logging.getLogger(__name__)

HEADER = "x-request-id"
# Printable ASCII without spaces, up to 128 characters: what proxies' ids (UUIDs, AWS trace ids) look like.
_SANE = re.compile(r"[\x21-\x7e]{1,128}")


# A fresh id is this process's random prefix and a counter: unique without a random draw per request
# (uuid4 costs a getrandom(2) call each). 32 hex digits, as uuid4().hex.
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count()
_HEADER = HEADER.encode()


def _new_prefix() -> None:
    # A forked child must not hand out its parent's ids.
    global _PREFIX
    _PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_prefix)


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID if sane, else a fresh one (32 hex digits)."""
    for name, value in scope.get("headers", ()):
        if name == _HEADER:
            text = value.decode("latin-1")
            if _SANE.fullmatch(text):
                return text
            break
    return f"{_PREFIX}{next(_COUNTER):016x}"


def current_request_id() -> str | None:
    """The id of the request being handled here (None outside one)."""
    found = log_fields().get("requestId")
    return found if isinstance(found, str) else None


class RequestIds:
    """ASGI middleware: gives each HTTP request its id, in the log context and the response headers."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                message = {**message, "headers": [*headers, (_HEADER, request_id.encode())]}
            await send(message)

        # uvicorn's access line is written as the response starts, inside this block: it carries the id too.
        with log_context(requestId=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # Logged here, inside the request's context, rather than by uvicorn after it (without
                # the id); the caller gets a bare 500, and the server goes on.
                log.exception("%s %s failed", scope.get("method"), scope.get("path"))
                if not started:
                    await send_with_id({"type": "http.response.start", "status": 500, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
