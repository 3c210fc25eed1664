"""JSON-RPC 2.0 over HTTP: what the terminal client and the demo call the API with (the standard library),
and its subscriptions' event streams (httpx and httpx-sse), followed across dropped connections."""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from cli.errors import ApiError

# The refusals a stream ends with that another try cannot change; after any other end the stream is
# opened again, resuming after the last event seen.
FINAL_REFUSALS = frozenset({"UNAUTHORIZED", "FORBIDDEN", "BAD_REQUEST", "NOT_FOUND", "PRECONDITION_FAILED"})
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 10.0
# A stream that cannot be opened again for this long is given up (the API is gone, not restarting).
RECONNECT_GIVE_UP_SECONDS = 300.0
# The API sends a heartbeat every 15 s: a stream silent for much longer than that is dead.
STREAM_READ_TIMEOUT = 60.0
METHOD_NOT_FOUND = -32601  # JSON-RPC's code: an API without this subscription


class StreamUnavailable(Exception):
    """The API answered a subscription without an event stream (an API from before subscriptions)."""


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

    def follow(self, method: str, params: dict[str, Any], on_open: Callable[[], None] | None = None) -> Iterator[Any]:
        """The subscription's events (each `result`), for as long as the caller takes them.

        A stream that drops (the network, an API restarting) is opened again after a backoff, with the
        last event's id as Last-Event-ID, so no event is lost; it is given up after
        RECONNECT_GIVE_UP_SECONDS without success. A refusal raises ApiError; an API that cannot stream
        raises StreamUnavailable before any event. `on_open()` is called when the first connection's
        stream is open: from then on, no change is missed.
        """
        last_event_id: str | None = None
        delay, failing_since, first = RECONNECT_FIRST_DELAY, None, True
        while True:
            try:
                for event_id, result in self._stream(method, params, last_event_id, first, on_open):
                    first = False
                    delay, failing_since = RECONNECT_FIRST_DELAY, None
                    last_event_id = event_id or last_event_id
                    if result is not _CHECKPOINT:
                        yield result
                return  # `event: return`: nothing more will come
            except _Reconnect as dropped:
                first = False
                if failing_since is None:
                    failing_since = time.monotonic()
                elif time.monotonic() - failing_since > RECONNECT_GIVE_UP_SECONDS:
                    raise ApiError(
                        f"{method}: lost the API's event stream at {self.base_url} and could not open it again"
                        f" for {RECONNECT_GIVE_UP_SECONDS:.0f} s ({dropped})",
                        "UNREACHABLE",
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY)

    def _stream(
        self,
        method: str,
        params: dict[str, Any],
        last_event_id: str | None,
        first: bool,
        on_open: Callable[[], None] | None,
    ) -> Iterator[tuple[str, Any]]:
        """One connection's events as (id, result); raises _Reconnect when it ends without a last word
        (and ApiError when the very first connection cannot be made: the address is wrong)."""
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params}
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {self.token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT)
        try:
            with (
                httpx.Client(timeout=timeout) as client,
                connect_sse(client, "POST", f"{self.base_url}/rpc", json=body, headers=headers) as source,
            ):
                response = source.response
                if not response.headers.get("content-type", "").startswith("text/event-stream"):
                    raise _no_stream(method, response)
                if first and on_open is not None:
                    on_open()
                for sse in source.iter_sse():
                    if not sse.data:  # a checkpoint: an id to resume from, no event
                        yield sse.id, _CHECKPOINT
                        continue
                    data = json.loads(sse.data)
                    if sse.event == "message":
                        yield sse.id, data["params"]["result"]
                    elif sse.event == "return":
                        return
                    elif sse.event == "error":
                        error = data["error"]
                        if error.get("code") == METHOD_NOT_FOUND and first:
                            raise StreamUnavailable(method)
                        if (error.get("data") or {}).get("code") in FINAL_REFUSALS:
                            raise _api_error(method, error)
                        raise _Reconnect(f"the API ended the stream: {error.get('message')}")
        except httpx.ConnectError as exc:
            if first:
                raise ApiError(f"cannot reach the API at {self.base_url}: {exc}", "UNREACHABLE") from None
            raise _Reconnect(f"cannot reach the API: {exc}") from None
        except (httpx.TransportError, SSEError) as exc:
            raise _Reconnect(f"the stream broke: {type(exc).__name__}") from None
        raise _Reconnect("the API closed the stream")

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
                    raise ApiError(
                        f"download failed: cannot reach {_origin(url)}: {getattr(exc, 'reason', exc)}", "UNREACHABLE"
                    ) from None
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
    data: dict[str, Any] = error["data"] if isinstance(error.get("data"), dict) else {}
    code = data.get("code") or str(error.get("code"))
    details = [
        f"{'.'.join(str(p) for p in issue.get('loc', ()))}: {issue.get('msg')}"
        for issue in data.get("issues") or ()
        if isinstance(issue, dict)
    ]
    return ApiError(f"{method}: {error.get('message', 'error')}", code, details)


_CHECKPOINT = object()  # what _stream yields for an id line without an event


class _Reconnect(Exception):
    """The stream ended without a last word (`return` or a final refusal): open it again."""


def _no_stream(method: str, response: httpx.Response) -> Exception:
    """What an answer that is not an event stream means: an API without subscriptions, or a failure."""
    reply = _json_or_none(response.read())
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        if reply["error"].get("code") == METHOD_NOT_FOUND:  # an API from before subscriptions
            return StreamUnavailable(method)
        return _api_error(method, reply["error"])
    return ApiError(f"{method}: the API answered HTTP {response.status_code} without an event stream", "BAD_REPLY")


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
