"""Redis down during create: the export is accepted as QUEUED, and the sweep enqueues it exactly once."""

import pytest
import redis

from schemas.settings import Settings
from tests.support.rpc_client import RpcClient, create_params
from tests.support.servers import ServerThread, running_redis
from workers.queue import export_queue, sweep


@pytest.fixture
def own_redis():
    with running_redis("bx-test-redis-outage-") as server:
        yield server


@pytest.fixture
def api_on_own_redis(settings, own_redis):
    from procedures.app import create_app

    own_settings = settings.model_copy(update={"REDIS_URL": own_redis.url, "BATCH_EXPORT_SWEEP_GRACE_SECONDS": 0})
    with ServerThread(create_app(own_settings)) as server:
        yield server, own_settings


def test_create_with_redis_down_is_accepted_and_the_sweep_enqueues_it_once(
    api_on_own_redis, own_redis, project, owner_token, caplog
):
    server, own_settings = api_on_own_redis
    client = RpcClient(server.url)
    own_redis.stop()

    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    assert export["status"] == "QUEUED"
    assert "sweep will enqueue it" in caplog.text

    own_redis.start()
    connection = redis.Redis.from_url(own_redis.url)
    assert export_queue(connection).get_job_ids() == []
    assert export["id"] in sweep(own_settings, connection)
    assert export["id"] not in sweep(own_settings, connection)
    assert export_queue(connection).get_job_ids().count(export["id"]) == 1


def test_sweep_leaves_exports_that_already_have_a_job(api_on_own_redis, own_redis, project, owner_token):
    server, own_settings = api_on_own_redis
    export = RpcClient(server.url).result("batchExport.create", create_params(project.id), token=owner_token)
    connection = redis.Redis.from_url(own_redis.url)
    assert export["id"] not in sweep(own_settings, connection)
    assert export_queue(connection).get_job_ids().count(export["id"]) == 1


def test_sweep_ignores_exports_that_are_not_queued(api_on_own_redis, own_redis, project, owner_token):
    server, own_settings = api_on_own_redis
    client = RpcClient(server.url)
    own_redis.stop()
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    client.result("batchExport.cancel", {"projectId": project.id, "batchExportId": export["id"]}, token=owner_token)
    own_redis.start()
    assert export["id"] not in sweep(own_settings, redis.Redis.from_url(own_redis.url))


def test_sweep_waits_for_the_grace_period(settings, own_redis, project, owner_token, api_on_own_redis):
    server, _ = api_on_own_redis
    client = RpcClient(server.url)
    own_redis.stop()
    export = client.result("batchExport.create", create_params(project.id), token=owner_token)
    own_redis.start()
    patient: Settings = settings.model_copy(
        update={"REDIS_URL": own_redis.url, "BATCH_EXPORT_SWEEP_GRACE_SECONDS": 3600}
    )
    assert export["id"] not in sweep(patient, redis.Redis.from_url(own_redis.url))
