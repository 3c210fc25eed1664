"""Periodic clean-up: deleting the objects of exports whose download period is over, and the exports'
changes older than live streams replay.

Run by every worker's maintenance cycle (workers.queue.ExportWorker) and by `batch-export sweep`.
Storage knows objects, db knows exports; this module is where the two meet.
"""

from __future__ import annotations

import logging

import db
from db import batch_exports, export_changes
from schemas.settings import Settings
from workers.storage import Storage, open_storage

log = logging.getLogger(__name__)


def delete_expired(settings: Settings) -> int:
    """Deletes the files of exports whose download period is over; returns how many."""
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        deleted = delete_expired_exports(conn, open_storage(settings))
    if deleted:
        log.info("deleted %d expired export file(s)", deleted)
    return deleted


def delete_expired_exports(conn: db.Connection, storage: Storage, *, batch_size: int = 500) -> int:
    """Deletes the objects of exports whose link has expired and forgets their keys; returns how many."""
    deleted = 0
    while True:
        expired = batch_exports.expired_with_objects(conn, batch_size)
        if not expired:
            return deleted
        for row in expired:
            try:
                storage.delete(row["object_key"])
            except Exception:
                log.exception(
                    "could not delete the expired export object %s; will retry at the next sweep", row["object_key"]
                )
                return deleted
            batch_exports.forget_object(conn, row["id"], row["object_key"])
            deleted += 1
        if len(expired) < batch_size:
            return deleted


def prune_changes(settings: Settings) -> int:
    """Deletes the exports' changes older than SUBSCRIPTION_REPLAY_HOURS; returns how many."""
    with db.connect(settings.DATABASE_URL, autocommit=True) as conn:
        pruned = export_changes.prune(conn, settings.SUBSCRIPTION_REPLAY_HOURS * 3600)
    if pruned:
        log.info("pruned %d export change(s) older than %g h", pruned, settings.SUBSCRIPTION_REPLAY_HOURS)
    return pruned
