"""JSON-RPC over HTTP the way the frontend calls it, and the inputs the procedure tests share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx
from httpx_sse import connect_sse


@dataclass
class RpcClient:
    """JSON-RPC over HTTP the way the frontend calls it; returns the parsed reply."""

    base_url: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    _ids: int = 0

    def call(self, method: str, params=None, *, token: str | None = None) -> dict:
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if params is not None:
            body["params"] = params
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(f"{self.base_url}/rpc", json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def first_event(self, method: str, params=None, *, token: str | None = None) -> dict:
        """A subscription's first event, as the JSON-RPC message it carries (a notification, or the error
        response that refused or ended the stream); the stream is closed after it."""
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if params is not None:
            body["params"] = params
        headers = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {token}"} if token else {})}
        with connect_sse(self.http, "POST", f"{self.base_url}/rpc", json=body, headers=headers) as source:
            assert source.response.status_code == 200, source.response.read()
            for event in source.iter_sse():
                if event.data:
                    return json.loads(event.data)
        raise AssertionError(f"{method}: the stream ended without an event")

    def result(self, method: str, params=None, *, token: str | None = None):
        reply = self.call(method, params, token=token)
        assert "error" not in reply, reply
        return reply["result"]

    def error(self, method: str, params=None, *, token: str | None = None) -> dict:
        reply = self.call(method, params, token=token)
        assert "error" in reply, reply
        return reply["error"]


TRACES_QUERY = {"tableName": "traces", "filter": None, "orderBy": {"column": "timestamp", "order": "DESC"}}


def create_params(project_id: str, **overrides) -> dict:
    params = {"projectId": project_id, "name": "my export", "format": "CSV", "query": TRACES_QUERY}
    params.update(overrides)
    return params
