"""Large exports in parts: rows/s with 1 and 2 workers against one COPY stream, a worker killed half-way, memory.

    .venv/bin/python bench/export_parts.py [--rows 10000000] [--part-rows 1000000] [--reuse DIR]

Starts its own Postgres and Redis, seeds N traces (timed), then exports every trace as CSV:
(a) psql running the single-stream export's COPY statement into a file, the physical baseline of
one stream; (b) the export in parts through one `batch-export worker`, then through two; (c) the
same with two workers, one work horse SIGKILLed (as the OOM killer does) once half the rows are
written. Each run is timed from the enqueue to COMPLETED; the peak RSS of every work horse (the
parts' and the assembly's) is polled from /proc. Targets (issue 14): two workers ≥ 1.4× the COPY
stream's rows/s; the killed run ≤ 1.15× the undisturbed two-worker run; work horse RSS ≤ 200 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from export_runs import WorkerProcess, _PeakRss, copy_statement_sql, copy_to_file, export_settings
from export_throughput import seeded_project
from harness import Caller, Report, children, local_servers, table

import db
from db import batch_exports
from schemas import FINAL_STATUSES
from workers.queue import enqueue_export

SPEED_TARGET, KILL_TARGET, RSS_TARGET_MIB = 1.4, 1.15, 200


def run_in_parts(
    conn: psycopg.Connection, caller: Caller, workers: list[WorkerProcess], kill_at: float | None = None
) -> dict:
    """One CSV export of every trace through `workers`; with `kill_at`, one work horse is SIGKILLed once
    that share of the rows is written. Returns seconds, rows, bytes, parts, attempts and peak RSS."""
    query = {"tableName": "traces", "filter": [], "orderBy": None}
    export_id = conn.execute(
        batch_exports.INSERT_SQL,
        batch_exports.insert_params(
            project_id=caller.project_id, user_id=caller.user_id, name="bench parts", format="CSV", query=query
        ),
    ).fetchone()["id"]
    conn.commit()
    peaks = []
    for worker in workers:
        assert worker.process is not None
        peak = _PeakRss(worker.process.pid, set(children(worker.process.pid)))
        peak.start()
        peaks.append(peak)
    killed = None
    started = time.monotonic()
    enqueue_export(workers[0].redis, export_id, workers[0].settings)
    try:
        while True:
            row = conn.execute(
                "SELECT status, rows_exported, rows_total FROM batch_exports WHERE id = %s", (export_id,)
            ).fetchone()
            conn.commit()
            if row["status"] in FINAL_STATUSES:
                break
            halfway = kill_at is not None and row["rows_total"] and row["rows_exported"] >= kill_at * row["rows_total"]
            if halfway and killed is None:
                killed = _kill_a_running_part(conn, export_id)
            time.sleep(0.05)
        seconds = time.monotonic() - started
    finally:
        for peak in peaks:
            peak.stop()
    done = batch_exports.load(conn, export_id)
    attempts = [
        r["attempts"]
        for r in conn.execute(
            "SELECT attempts FROM batch_export_parts WHERE export_id = %s ORDER BY part", (export_id,)
        )
    ]
    conn.commit()
    if done["status"] != "COMPLETED":
        raise RuntimeError(f"export {export_id} ended {done['status']}: {done['log']}")
    path = Path(workers[0].env["EXPORT_STORAGE_URL"].removeprefix("file://")) / done["object_key"]
    size = path.stat().st_size
    path.unlink()  # the disk holds one export at a time
    return {
        "seconds": seconds,
        "rows": done["rows_exported"],
        "bytes": size,
        "parts": done["parts_total"],
        "attempts": attempts,
        "killed": killed,
        "peak_kib": max(p.kib for p in peaks),
        "sha256": done["sha256"],
    }


def _kill_a_running_part(conn: psycopg.Connection, export_id: str) -> int | None:
    """SIGKILLs the work horse of a part that is being written (its pid is in the part's row)."""
    running = conn.execute(
        "SELECT worker FROM batch_export_parts WHERE export_id = %s AND status = 'PROCESSING' ORDER BY part LIMIT 1",
        (export_id,),
    ).fetchone()
    conn.commit()
    if running is None:
        return None
    pid = int(running["worker"].rsplit(":", 1)[1])
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="traces to seed and export (default 10,000,000)")
    parser.add_argument("--part-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--reuse", type=Path, help="keep Postgres's data here and reuse an earlier seed of the same size"
    )
    parser.add_argument(
        "--skip-one-worker",
        action="store_true",
        help="leave out the one-worker run (a third of the time at 10M rows; a smaller run shows the scaling)",
    )
    args = parser.parse_args()

    report = Report(f"Export in parts, {args.rows:,} traces")
    work = Path(tempfile.mkdtemp(prefix="bx-bench-parts-"))
    with local_servers(args.reuse) as servers, db.connect(servers.database_url) as conn:
        caller, seed_seconds = seeded_project(conn, servers.folder, args.rows)
        # An export an interrupted earlier run left behind (--reuse) would be resumed by the workers' sweep.
        conn.execute("UPDATE batch_exports SET status = 'CANCELLED' WHERE status IN ('QUEUED', 'PROCESSING')")
        conn.commit()
        if seed_seconds is not None:
            print(f"seeded {args.rows:,} traces in {seed_seconds:.0f} s", flush=True)
        env = {
            **export_settings(servers.database_url, servers.redis_url, work / "exports", args.rows + 1),
            "BATCH_EXPORT_ROW_LIMIT": "none",
            "BATCH_EXPORT_PART_ROWS": str(args.part_rows),
        }
        runs: dict[str, dict] = {}
        template = _baseline_export(conn, caller)
        statement = copy_statement_sql(conn, template, args.rows + 1)
        seconds, size = copy_to_file(servers.database_url, statement, work / "baseline.csv")
        runs["copy"] = {"seconds": seconds, "rows": args.rows, "bytes": size}
        print(f"psql COPY, one stream: {seconds:.1f} s, {size / 2**20:,.0f} MiB", flush=True)
        workers = [WorkerProcess(env, work / f"worker-{n}") for n in range(2)]
        try:
            workers[0].start()
            if not args.skip_one_worker:
                runs["1 worker"] = run_in_parts(conn, caller, workers[:1])
                print(f"1 worker: {runs['1 worker']}", flush=True)
            workers[1].start()
            runs["2 workers"] = run_in_parts(conn, caller, workers)
            print(f"2 workers: {runs['2 workers']}", flush=True)
            runs["2 workers, one killed at 50%"] = run_in_parts(conn, caller, workers, kill_at=0.5)
            print(f"killed: {runs['2 workers, one killed at 50%']}", flush=True)
        finally:
            for worker in workers:
                worker.stop()

    copy_rate = runs["copy"]["rows"] / runs["copy"]["seconds"]
    rows = []
    for name, run in runs.items():
        rate = run["rows"] / run["seconds"]
        rows.append(
            [
                name,
                f"{run['rows']:,}",
                f"{run['bytes'] / 2**20:,.0f} MiB",
                f"{run['seconds']:.1f} s",
                f"{rate:,.0f}",
                f"**{rate / copy_rate:.2f}**",
                str(run.get("parts", 1)),
                " ".join(map(str, run.get("attempts", []))) or "—",
                f"{run['peak_kib'] / 1024:.0f} MiB" if "peak_kib" in run else "—",
            ]
        )
    report.add(
        table(
            [
                "run",
                "rows",
                "file",
                "time",
                "rows/s",
                "÷ COPY stream",
                "parts",
                "attempts per part",
                "peak work horse RSS",
            ],
            rows,
        )
    )
    two, killed = runs["2 workers"], runs["2 workers, one killed at 50%"]
    speed = (two["rows"] / two["seconds"]) / copy_rate
    slow = killed["seconds"] / two["seconds"]
    peak = max(r["peak_kib"] for r in runs.values() if "peak_kib" in r) / 1024
    report.add(
        f"CSV, every trace in the default order, `BATCH_EXPORT_PART_ROWS` = {args.part_rows:,}, file storage."
        " COPY stream: psql running the single-stream export's own COPY statement into a file (one backend)."
        " Worker runs: timed from the enqueue to COMPLETED, planning and joining the parts included."
        " Killed run: one work horse SIGKILLed once half the rows were written; RQ retries its part"
        " (after BATCH_EXPORT_JOB_RETRY_DELAYS' first 10 s) while the other parts go on."
        + (f" Seed: {seed_seconds:.0f} s." if seed_seconds is not None else "")
        + f"\n\nTargets: 2 workers {speed:.2f}× the COPY stream ({'meets' if speed >= SPEED_TARGET else 'MISSES'}"
        f" ≥ {SPEED_TARGET}); killed run {slow:.2f}× the undisturbed one ({'meets' if slow <= KILL_TARGET else 'MISSES'}"
        f" ≤ {KILL_TARGET}); peak work horse RSS {peak:.0f} MiB ({'meets' if peak <= RSS_TARGET_MIB else 'MISSES'}"
        f" ≤ {RSS_TARGET_MIB}). Same file in every run: {len({r['sha256'] for r in runs.values() if 'sha256' in r}) == 1}."
    )
    report.save()


def _baseline_export(conn: psycopg.Connection, caller: Caller) -> dict:
    """An export row whose single-stream COPY statement is the baseline (never run by a worker)."""
    query = {"tableName": "traces", "filter": [], "orderBy": None}
    export_id = conn.execute(
        batch_exports.INSERT_SQL,
        batch_exports.insert_params(
            project_id=caller.project_id, user_id=caller.user_id, name="bench baseline", format="CSV", query=query
        ),
    ).fetchone()["id"]
    conn.execute("UPDATE batch_exports SET status = 'CANCELLED' WHERE id = %s", (export_id,))
    conn.commit()
    return batch_exports.load(conn, export_id)


if __name__ == "__main__":
    sys.exit(main())
