"""Export throughput: the real job (RQ worker, file storage) against Postgres's own COPY of the same rows.

    .venv/bin/python bench/export_throughput.py [--rows 1000000] [--rounds 3]

Starts its own Postgres (durable defaults) and Redis, migrates, seeds N traces (and their
observations, scores, sessions ...), then, for several rounds and alternating the order each
round, exports the traces as CSV and JSONL (a) through `batch-export worker` and (b) with psql
running the job's own COPY statement into a file; (c) the same statement through psycopg with a
plain read/write loop is shown too. Reports rows/s, the ratio job/COPY of the medians, and the
work horse's peak RSS. Target (issue 5): job ≥ 0.8× COPY for CSV and JSONL.

Each round also runs the CSV job compressed (zstd, gzip): its rows/s and file size against the
uncompressed CSV job of the same round. Target (issue 13): CSV + zstd ≥ 0.9× the CSV job's rows/s,
file ≤ 0.2× the CSV's size; gzip is reported. And the PARQUET job (zstd columns, ADBC reading
binary COPY into Arrow): rows/s ≥ 0.7× psql's CSV COPY of the same round, file ≤ 0.25× the CSV's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from export_runs import WorkerProcess, copy_statement_sql, copy_to_file, export_settings, psycopg_copy_to_file
from harness import Caller, Report, local_servers, median, project_with_member, table

import db
from devstack.seed import seed

FORMATS = ("CSV", "JSONL")
TARGET_RATIO = 0.8
COMPRESSIONS = ("zstd", "gzip")
ZSTD_SPEED_TARGET, ZSTD_SIZE_TARGET = 0.9, 0.2
PARQUET_SPEED_TARGET, PARQUET_SIZE_TARGET = 0.7, 0.25


def seeded_project(conn, folder: Path, rows: int) -> tuple[Caller, float | None]:
    """The seeded project; with --reuse, the one seeded by an earlier run if it has the same size."""
    marker = folder / f"seeded-{rows}.json"
    if marker.exists():
        return Caller(**json.loads(marker.read_text())), None
    caller = project_with_member(conn, f"bench traces {rows}")
    started = time.monotonic()
    seed(conn, caller.project_id, traces=rows)
    conn.commit()
    seconds = time.monotonic() - started
    # Settle the fresh tables (hint bits, visibility map) the way autovacuum would, before any timing:
    # otherwise whichever export runs first pays for it.
    conn.autocommit = True
    conn.execute("VACUUM (ANALYZE)")
    conn.autocommit = False
    marker.write_text(json.dumps(caller.__dict__))
    return caller, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="traces to seed and export (default 1,000,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--reuse", type=Path, help="keep Postgres's data here and reuse an earlier seed of the same size"
    )
    args = parser.parse_args()

    report = Report(f"Export throughput, {args.rows:,} traces")
    work = Path(tempfile.mkdtemp(prefix="bx-bench-export-"))
    with local_servers(args.reuse) as servers, db.connect(servers.database_url) as conn:
        caller, seed_seconds = seeded_project(conn, servers.folder, args.rows)
        if seed_seconds is not None:
            print(f"seeded {args.rows:,} traces in {seed_seconds:.0f} s", flush=True)
        row_limit = max(args.rows + 1, 1_500_000)
        env = export_settings(servers.database_url, servers.redis_url, work / "exports", row_limit)
        worker = WorkerProcess(env, work / "worker")
        worker.start()
        runs: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
        peaks: dict[str, list[int]] = {f: [] for f in FORMATS}
        try:
            for round_no in range(args.rounds):
                for compression in COMPRESSIONS:
                    run, _ = worker.run_export(conn, caller, "traces", "CSV", compression)
                    runs.setdefault(("CSV", compression), []).append((run.seconds, run.rows, run.bytes))
                    peaks.setdefault(compression, []).append(run.peak_rss_kib)
                    print(
                        f"round {round_no + 1} CSV+{compression:5} job {run.seconds:7.2f} s"
                        f"  {run.rows / run.seconds:>10,.0f} rows/s  {run.bytes / 2**20:8.1f} MiB",
                        flush=True,
                    )
                run, _ = worker.run_export(conn, caller, "traces", "PARQUET")
                runs.setdefault(("PARQUET", "job"), []).append((run.seconds, run.rows, run.bytes))
                peaks.setdefault("PARQUET", []).append(run.peak_rss_kib)
                print(
                    f"round {round_no + 1} PARQUET    job {run.seconds:7.2f} s"
                    f"  {run.rows / run.seconds:>10,.0f} rows/s  {run.bytes / 2**20:8.1f} MiB",
                    flush=True,
                )
                for fmt in FORMATS:
                    ways = ["job", "copy", "psycopg"]
                    if round_no % 2:
                        ways.reverse()  # neither side always runs on a warmer cache
                    statement = None
                    for way in ways:
                        if way == "job":
                            run, export = worker.run_export(conn, caller, "traces", fmt)
                            result = (run.seconds, run.rows, run.bytes)
                            peaks[fmt].append(run.peak_rss_kib)
                            statement = statement or copy_statement_sql(conn, export, row_limit)
                        else:
                            if statement is None:
                                # The baseline runs the statement of an export like the job's (same query).
                                statement = copy_statement_sql(conn, _template_export(conn, caller, fmt), row_limit)
                            run_copy = copy_to_file if way == "copy" else psycopg_copy_to_file
                            seconds, size = run_copy(servers.database_url, statement, work / f"baseline.{fmt.lower()}")
                            result = (seconds, args.rows, size)
                        runs.setdefault((fmt, way), []).append(result)
                        print(
                            f"round {round_no + 1} {fmt:5} {way:8} {result[0]:7.2f} s  {result[1] / result[0]:>10,.0f} rows/s"
                            f"  {result[2] / 2**20:8.1f} MiB",
                            flush=True,
                        )
        finally:
            worker.stop()

    rows = []
    verdicts = []
    for fmt in FORMATS:
        job_s = median([r[0] for r in runs[(fmt, "job")]])
        copy_s = median([r[0] for r in runs[(fmt, "copy")]])
        pg_s = median([r[0] for r in runs[(fmt, "psycopg")]])
        exported = runs[(fmt, "job")][0][1]
        ratio = copy_s / job_s
        peak_mib = max(peaks[fmt]) / 1024
        rows.append(
            [
                fmt,
                f"{exported:,}",
                f"{runs[(fmt, 'job')][0][2] / 2**20:,.0f} MiB",
                f"{exported / job_s:,.0f} ({job_s:.2f} s)",
                f"{exported / copy_s:,.0f} ({copy_s:.2f} s)",
                f"{exported / pg_s:,.0f} ({pg_s:.2f} s)",
                f"**{ratio:.2f}**",
                " / ".join(f"{c[0] / j[0]:.2f}" for j, c in zip(runs[(fmt, "job")], runs[(fmt, "copy")])),
                f"{peak_mib:.0f} MiB",
            ]
        )
        verdicts.append(
            f"{fmt}: job/COPY {ratio:.2f} ({'meets' if ratio >= TARGET_RATIO else 'MISSES'} ≥ {TARGET_RATIO})"
        )
    report.add(
        table(
            [
                "format",
                "rows",
                "file",
                "job rows/s",
                "psql COPY rows/s",
                "psycopg copy rows/s",
                "job/COPY",
                "job/COPY each round",
                "work horse peak RSS",
            ],
            rows,
        )
    )
    report.add(
        f"Medians of {args.rounds} rounds (job/COPY is the ratio of the medians), order alternating each round. Job: `batch-export worker` (RQ forks a work horse),"
        " timed from `enqueue_export` to the row's COMPLETED, file storage, export of all traces in the default order."
        " COPY: psql running the job's own COPY statement (same SELECT, columns, filter, order, cut-off) into a file."
        " psycopg copy: that statement through psycopg with a plain read/write loop."
        + (f" Seed: {seed_seconds:.0f} s." if seed_seconds is not None else "")
        + "\n\nTargets: "
        + "; ".join(verdicts)
        + "."
    )
    plain_s = median([r[0] for r in runs[("CSV", "job")]])
    plain_bytes = runs[("CSV", "job")][0][2]
    packed_rows, packed_verdicts = [], []
    for compression in COMPRESSIONS:
        seconds = median([r[0] for r in runs[("CSV", compression)]])
        exported, size = runs[("CSV", compression)][0][1], runs[("CSV", compression)][0][2]
        speed, ratio = plain_s / seconds, size / plain_bytes
        packed_rows.append(
            [
                f"CSV + {compression}",
                f"{exported / seconds:,.0f} ({seconds:.2f} s)",
                f"**{speed:.2f}**",
                f"{size / 2**20:,.1f} MiB",
                f"**{ratio:.3f}**",
                f"{max(peaks[compression]) / 1024:.0f} MiB",
            ]
        )
        if compression == "zstd":
            packed_verdicts.append(
                f"zstd rows/s {speed:.2f}× ({'meets' if speed >= ZSTD_SPEED_TARGET else 'MISSES'} ≥ {ZSTD_SPEED_TARGET}),"
                f" size {ratio:.3f}× ({'meets' if ratio <= ZSTD_SIZE_TARGET else 'MISSES'} ≤ {ZSTD_SIZE_TARGET})"
            )
    report.add(
        table(["file", "job rows/s", "rows/s ÷ CSV job", "file", "size ÷ CSV", "work horse peak RSS"], packed_rows)
    )
    report.add(
        f"Compressed CSV jobs, medians of {args.rounds} rounds, against the uncompressed CSV job above"
        f" ({plain_bytes / 2**20:,.0f} MiB). Targets: " + "; ".join(packed_verdicts) + "; gzip reported."
    )
    copy_s = median([r[0] for r in runs[("CSV", "copy")]])
    parquet_s = median([r[0] for r in runs[("PARQUET", "job")]])
    exported, size = runs[("PARQUET", "job")][0][1], runs[("PARQUET", "job")][0][2]
    speed, ratio = copy_s / parquet_s, size / plain_bytes
    report.add(
        table(
            ["file", "job rows/s", "rows/s ÷ CSV COPY", "each round", "file", "size ÷ CSV", "work horse peak RSS"],
            [
                [
                    "PARQUET (zstd)",
                    f"{exported / parquet_s:,.0f} ({parquet_s:.2f} s)",
                    f"**{speed:.2f}**",
                    " / ".join(f"{c[0] / p[0]:.2f}" for p, c in zip(runs[("PARQUET", "job")], runs[("CSV", "copy")])),
                    f"{size / 2**20:,.1f} MiB",
                    f"**{ratio:.3f}**",
                    f"{max(peaks['PARQUET']) / 1024:.0f} MiB",
                ]
            ],
        )
    )
    report.add(
        f"The Parquet job, median of {args.rounds} rounds, against psql's CSV COPY of the same rounds and the CSV"
        f" job's file. Targets: rows/s {speed:.2f}× ({'meets' if speed >= PARQUET_SPEED_TARGET else 'MISSES'}"
        f" ≥ {PARQUET_SPEED_TARGET}), size {ratio:.3f}× ({'meets' if ratio <= PARQUET_SIZE_TARGET else 'MISSES'}"
        f" ≤ {PARQUET_SIZE_TARGET})."
    )
    report.save()


def _template_export(conn, caller: Caller, fmt: str) -> dict:
    """An export row for the baseline's statement when the baseline runs before the round's job."""
    from db import batch_exports

    query = {"tableName": "traces", "filter": [], "orderBy": None}
    export_id = conn.execute(
        batch_exports.INSERT_SQL,
        batch_exports.insert_params(
            project_id=caller.project_id, user_id=caller.user_id, name="bench baseline", format=fmt, query=query
        ),
    ).fetchone()["id"]
    conn.execute("UPDATE batch_exports SET status = 'CANCELLED' WHERE id = %s", (export_id,))
    conn.commit()
    return batch_exports.load(conn, export_id)


if __name__ == "__main__":
    sys.exit(main())
