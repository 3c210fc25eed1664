"""200 clients for a minute against one `batch-export serve` and two workers: no 5xx, nothing lost or stuck, flat memory.

The length is BX_LOAD_SECONDS (default 60). Each client, signed in to one of several projects, loops
over create / all / cancel. TOO_MANY_REQUESTS (the per-project cap on active exports) and
PRECONDITION_FAILED (cancelling an export that already finished) are answers a user can get under
load; anything else, an HTTP status other than 200 or an INTERNAL error above all, fails the test.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx
import pytest

from tests.support.faults import FaultStack, make_tenant
from tests.support.processes import wait_for
from tests.support.world import Project

pytestmark = pytest.mark.slow

CLIENTS = 200
PROJECTS = 8
EXPECTED_ERRORS = {"batchExport.create": {"TOO_MANY_REQUESTS"}, "batchExport.cancel": {"PRECONDITION_FAILED"}}


@dataclass
class Tally:
    """What the clients saw."""

    calls: Counter = field(default_factory=Counter)
    http_statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    unexpected: list = field(default_factory=list)
    created: set = field(default_factory=set)
    told: dict = field(default_factory=lambda: defaultdict(set))  # export id -> what cancel answered
    clients_answered: set = field(default_factory=set)


async def client_loop(number: int, tenant: Project, http: httpx.AsyncClient, deadline: float, tally: Tally) -> None:
    rng = random.Random(number)
    mine: list[str] = []
    headers = {"Authorization": f"Bearer {tenant.token}"}
    while time.monotonic() < deadline:
        roll = rng.random()
        if roll < 0.35:
            method = "batchExport.create"
            params = {
                "projectId": tenant.id,
                "name": f"load {number}",
                "format": rng.choice(["CSV", "JSON", "JSONL"]),
                "query": {
                    "tableName": rng.choice(["traces", "scores", "observations"]),
                    "filter": None,
                    "orderBy": None,
                },
            }
        elif roll < 0.8 or not mine:
            method = "batchExport.all"
            params = {"projectId": tenant.id, "page": 0, "limit": rng.choice([10, 50])}
        else:
            method = "batchExport.cancel"
            params = {"projectId": tenant.id, "batchExportId": rng.choice(mine)}
        body = {"jsonrpc": "2.0", "id": number, "method": method, "params": params}
        try:
            response = await http.post("/rpc", json=body, headers=headers)
        except httpx.HTTPError as exc:
            tally.unexpected.append((method, f"{type(exc).__name__}: {exc}"))
            continue
        tally.calls[method] += 1
        tally.http_statuses[response.status_code] += 1
        if response.status_code != 200:
            tally.unexpected.append((method, response.status_code, response.text[:300]))
            continue
        reply = response.json()
        tally.clients_answered.add(number)
        if "error" in reply:
            code = reply["error"]["data"]["code"]
            tally.errors[(method, code)] += 1
            if code not in EXPECTED_ERRORS.get(method, set()):
                tally.unexpected.append((method, reply["error"]))
            elif method == "batchExport.cancel":
                tally.told[params["batchExportId"]].add("PRECONDITION_FAILED")
        elif method == "batchExport.create":
            mine.append(reply["result"]["id"])
            tally.created.add(reply["result"]["id"])
        elif method == "batchExport.cancel":
            tally.told[params["batchExportId"]].add(reply["result"]["status"])


async def run_clients(url: str, tenants: list[Project], seconds: float, tally: Tally) -> None:
    # A new connection per request. uvicorn closes a connection idle for 5 s, and a client as starved of
    # CPU as this one may reuse it a moment after: its request then dies unanswered, a client-side
    # race that has nothing to do with the service (with a 60 s keep-alive it never happens).
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(client_loop(i, tenants[i % len(tenants)], http, deadline, tally) for i in range(CLIENTS))
        )


def test_two_hundred_clients_for_a_minute(stack: FaultStack, small_tenant: Project, conn):
    seconds = float(os.environ.get("BX_LOAD_SECONDS", "60"))
    # One project with data; the others' exports hold a header only, so the API, not the export
    # engine, is what the clients keep busy.
    tenants = [small_tenant] + [make_tenant(conn, f"load {i}", traces=None) for i in range(PROJECTS - 1)]
    workers = stack.workers("worker-a", "worker-b")
    api = stack.api()

    rss: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        started = time.monotonic()
        while not sampling.wait(0.5):
            rss.append((time.monotonic() - started, api.rss_bytes()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tally = Tally()
    try:
        asyncio.run(run_clients(api.url, tenants, seconds, tally))
    finally:
        sampling.set()
        sampler.join()

    assert tally.unexpected == [], tally.unexpected[:10]
    assert set(tally.http_statuses) == {200}
    assert tally.clients_answered == set(range(CLIENTS)), "every client got answers"
    assert tally.calls["batchExport.create"] and tally.calls["batchExport.all"] and tally.calls["batchExport.cancel"]
    assert tally.created, tally.errors

    # After the load: every export that was created reaches a final state, soon.
    ids = sorted(tally.created)
    active = "SELECT count(*) AS n FROM batch_exports WHERE id = ANY(%s) AND status IN ('QUEUED', 'PROCESSING')"
    wait_for(
        lambda: conn.execute(active, (ids,)).fetchone()["n"] == 0,
        180,
        "every created export to finish",
        *workers,
        interval=1,
    )
    rows = {r["id"]: r for r in conn.execute("SELECT * FROM batch_exports WHERE id = ANY(%s)", (ids,)).fetchall()}
    assert set(rows) == set(ids), "no created export is missing"
    projects = [t.id for t in tenants]
    stored = {
        r["id"] for r in conn.execute("SELECT id FROM batch_exports WHERE project_id = ANY(%s)", (projects,)).fetchall()
    }
    assert stored == set(ids), "no export exists that its client was not told about"
    statuses = Counter(r["status"] for r in rows.values())
    assert set(statuses) <= {"COMPLETED", "CANCELLED"}, statuses
    for export_id, answers in tally.told.items():
        final = rows[export_id]["status"]
        if "CANCELLED" in answers:
            assert final == "CANCELLED", (export_id, answers, final)
        else:
            assert final == "COMPLETED", (export_id, answers, final)
    assert all((stack.storage / r["object_key"]).is_file() for r in rows.values() if r["status"] == "COMPLETED")

    # The API's memory is flat once warm: no sample after the first fifth exceeds 1.5x the RSS then.
    warm_up = max(5.0, seconds / 5)
    warm = [size for at, size in rss if at <= warm_up][-1]
    later = [size for at, size in rss if at > warm_up]
    assert later and max(later) < 1.5 * warm, (warm, max(later))
