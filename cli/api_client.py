"""JSON-RPC 2.0 over HTTP with the standard library: what the terminal client and the demo call the API with."""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cli.errors import ApiError


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
