"""The API process's one listener of export changes: bounded per stream, and nothing lost when a stream
falls behind or the listening connection drops (real Postgres, the feed run as the app runs it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import psycopg

import db
from db import batch_exports
from procedures.batch_export import to_batch_export
from procedures.export_changes import ExportChangeFeed

WAIT_S = 30


@asynccontextmanager
async def running_feed(database_url: str, max_pending: int = 256) -> AsyncIterator[ExportChangeFeed]:
    pool = db.create_pool(database_url)
    await pool.open()
    feed = ExportChangeFeed(database_url, pool, to_batch_export, max_pending=max_pending)
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: feed.connected)
        yield feed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.close()


async def until(condition: Callable[[], bool], what: str = "the condition") -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} never held"
        await asyncio.sleep(0.01)


def test_a_follower_that_falls_behind_replays_every_change_from_the_log(database_url, conn, project):
    export_id = project.new_export(conn)
    batch_exports.mark_processing(conn, export_id)

    async def scenario() -> list[int]:
        async with running_feed(database_url, max_pending=2) as feed:
            changes = await feed.open(project.id, export_id, None)
            assert (await anext(changes)).export.status == "PROCESSING"  # the current state first
            (follower,) = feed._followers[project.id]
            for rows in range(1, 11):  # ten changes while nobody takes any
                await asyncio.to_thread(batch_exports.record_progress, conn, export_id, rows, 10)
            await until(lambda: follower.behind, "falling behind")
            assert len(follower.pending) == 0  # it let go of what it held: memory stays bounded
            seen = [(await anext(changes)).export.progress.rowsExported for _ in range(10)]
            await changes.aclose()
            return seen

    assert asyncio.run(scenario()) == list(range(1, 11))


def test_changes_made_while_the_listener_was_cut_off_arrive_once_it_is_back(database_url, conn, project):
    export_id = project.new_export(conn)

    async def scenario() -> list[str]:
        async with running_feed(database_url) as feed:
            changes = await feed.open(project.id, None, None)
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                    (feed.connection_name,),
                )
            await until(lambda: not feed.connected, "the listener noticing")
            await asyncio.to_thread(batch_exports.mark_processing, conn, export_id)
            await asyncio.to_thread(batch_exports.record_progress, conn, export_id, 7, None)
            await asyncio.to_thread(batch_exports.mark_failed, conn, export_id, "boom")
            seen = [(await anext(changes)).export for _ in range(3)]
            await changes.aclose()
            return [f"{e.status} {e.progress.rowsExported}" for e in seen]

    assert asyncio.run(scenario()) == ["PROCESSING 0", "PROCESSING 7", "FAILED 7"]


def test_a_projects_stream_carries_none_of_another_projects_exports(database_url, conn, project):
    from tests.support.world import new_project

    elsewhere = new_project(conn, "not followed")

    async def scenario() -> list[str]:
        async with running_feed(database_url) as feed:
            changes = await feed.open(project.id, None, None)
            await asyncio.to_thread(elsewhere.new_export, conn, name="elsewhere")
            await asyncio.to_thread(project.new_export, conn, name="here")
            first = (await anext(changes)).export
            await changes.aclose()
            return [first.name]

    assert asyncio.run(scenario()) == ["here"]
