"""GET /metrics on the API: RPC calls by method and error code, exports created and cancelled, the queue's
and the exports' state, and a scrape that still answers when Redis or Postgres is down.

The suite's API runs in the test process, whose counters every test shares: each test compares a scrape
after its calls with one before them.
"""

from __future__ import annotations

import httpx

from devstack.servers import free_port
from procedures.app import create_app
from schemas.settings import Settings
from tests.support.metrics import Scrape, parse, scrape
from tests.support.rpc_client import RpcClient, create_params
from tests.support.servers import ServerThread, running_redis
from tests.support.world import Project


def calls(before: Scrape, after: Scrape, method: str, code: str) -> float:
    sample = "batch_export_rpc_calls_total"
    return after.value(sample, method=method, code=code) - before.value(sample, method=method, code=code)


def timed(before: Scrape, after: Scrape, method: str) -> float:
    sample = "batch_export_rpc_duration_seconds_count"
    return after.value(sample, method=method) - before.value(sample, method=method)


def test_metrics_are_served_in_the_prometheus_text_format(api):
    response = httpx.get(f"{api.url}/metrics", timeout=15)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = parse(response.text).families
    assert {"batch_export_rpc_calls", "batch_export_rpc_duration_seconds", "batch_export_exports_created"} <= set(
        families
    )


def test_the_rpc_counter_moves_by_exactly_the_calls_made_with_their_method_and_error_code(
    api, client: RpcClient, project: Project, owner_token: str
):
    viewer = project.member("VIEWER")
    before = scrape(api.url)
    client.result("batchExport.all", {"projectId": project.id}, token=owner_token)
    client.result("batchExport.all", {"projectId": project.id, "limit": 5}, token=owner_token)
    assert client.error("batchExport.all", {"projectId": project.id}, token="bx_not_a_token")["data"]["code"] == (
        "UNAUTHORIZED"
    )
    assert client.error("batchExport.create", create_params(project.id), token=viewer)["data"]["code"] == "FORBIDDEN"
    assert client.error("batchExport.all", {"projectId": project.id, "limit": 0}, token=owner_token)["code"] == -32602
    assert client.error("batchExport.nope", {}, token=owner_token)["code"] == -32601
    after = scrape(api.url)

    assert calls(before, after, "batchExport.all", "OK") == 2
    assert calls(before, after, "batchExport.all", "UNAUTHORIZED") == 1
    assert calls(before, after, "batchExport.create", "FORBIDDEN") == 1
    assert calls(before, after, "batchExport.all", "BAD_REQUEST") == 1
    assert calls(before, after, "(none)", "METHOD_NOT_FOUND") == 1  # the made-up name is no label value
    assert not [s for s in after.samples("batch_export_rpc_calls_total") if s.labels["method"] == "batchExport.nope"]
    moved = {
        (s.labels["method"], s.labels["code"]): s.value - before.value(s.name, **s.labels)
        for s in after.samples("batch_export_rpc_calls_total")
    }
    assert sum(moved.values()) == 6
    # The latency histogram saw the same calls: its count by method, and its +Inf bucket.
    assert timed(before, after, "batchExport.all") == 4
    assert timed(before, after, "batchExport.create") == 1
    inf = "batch_export_rpc_duration_seconds_bucket"
    assert after.value(inf, method="batchExport.all", le="+Inf") - before.value(
        inf, method="batchExport.all", le="+Inf"
    ) == (4)


def test_exports_created_and_cancelled_are_counted_by_table_and_format(
    api, client: RpcClient, project: Project, owner_token: str, redis_client
):
    before = scrape(api.url)
    first = client.result("batchExport.create", create_params(project.id, format="JSONL"), token=owner_token)
    client.result("batchExport.create", create_params(project.id, format="JSONL"), token=owner_token)
    observations = {"tableName": "observations", "filter": None, "orderBy": None}
    client.result("batchExport.create", create_params(project.id, format="CSV", query=observations), token=owner_token)
    client.result("batchExport.cancel", {"projectId": project.id, "batchExportId": first["id"]}, token=owner_token)
    # Cancelling it again changes nothing, and is not counted again.
    client.result("batchExport.cancel", {"projectId": project.id, "batchExportId": first["id"]}, token=owner_token)
    after = scrape(api.url)

    def moved(sample: str, **labels: str) -> float:
        return after.value(sample, **labels) - before.value(sample, **labels)

    assert moved("batch_export_exports_created_total", table="traces", format="JSONL") == 2
    assert moved("batch_export_exports_created_total", table="observations", format="CSV") == 1
    assert moved("batch_export_exports_finished_total", status="CANCELLED", table="traces", format="JSONL") == 1


def test_queue_depth_and_active_exports_count_what_waits(
    api, client: RpcClient, project: Project, owner_token: str, redis_client
):
    # No worker runs in this suite: what is enqueued stays queued.
    before = scrape(api.url)
    assert before.value("batch_export_queue_jobs", state="queued") == 0  # redis_client emptied Redis
    assert before.value("batch_export_queue_oldest_job_age_seconds") == 0
    for _ in range(3):
        client.result("batchExport.create", create_params(project.id), token=owner_token)
    after = scrape(api.url)

    assert after.value("batch_export_queue_jobs", state="queued") == 3
    assert after.value("batch_export_queue_jobs", state="started") == 0
    assert after.value("batch_export_queue_oldest_job_age_seconds") >= 0
    queued = "batch_export_exports_active"
    assert after.value(queued, status="QUEUED") - before.value(queued, status="QUEUED") == 3
    assert after.value("batch_export_state_source_up", source="redis") == 1
    assert after.value("batch_export_state_source_up", source="postgres") == 1
    assert after.labelled("batch_export_workers", "state") == {"busy": 0, "idle": 0}


def test_a_scrape_answers_without_the_state_of_a_redis_that_is_down(settings: Settings, client, owner_token):
    with running_redis("bx-metrics-redis-") as redis_server:
        app = create_app(settings.model_copy(update={"REDIS_URL": redis_server.url}))
        with ServerThread(app, free_port()) as api:
            assert scrape(api.url).value("batch_export_state_source_up", source="redis") == 1
            redis_server.stop()
            down = scrape(api.url)
    assert down.value("batch_export_state_source_up", source="redis") == 0
    assert down.value("batch_export_state_source_up", source="postgres") == 1
    assert not down.samples("batch_export_queue_jobs")
    assert not down.samples("batch_export_workers")
    assert down.samples("batch_export_exports_active")
    assert down.samples("batch_export_rpc_calls_total")  # the process's own metrics are all there


def test_a_scrape_answers_without_the_state_of_a_postgres_that_is_down(settings: Settings):
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/batch_export"
    app = create_app(settings.model_copy(update={"DATABASE_URL": nowhere}))
    with ServerThread(app, free_port()) as api:
        down = scrape(api.url)
    assert down.value("batch_export_state_source_up", source="postgres") == 0
    assert down.value("batch_export_state_source_up", source="redis") == 1
    assert not down.samples("batch_export_exports_active")
    assert down.samples("batch_export_queue_jobs")
