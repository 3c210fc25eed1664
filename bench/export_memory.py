"""Memory flatness: the export job's peak RSS at 1M and at about 3M rows.

    .venv/bin/python bench/export_memory.py [--rows 1000000]

Starts its own Postgres and Redis, seeds N traces (about 3N observations), and runs the real job
through `batch-export worker` (RQ forks a work horse per job; its VmHWM is polled from /proc):
observations cut at N rows by BATCH_EXPORT_ROW_LIMIT, and all observations (about 3N), in every
format; plus the N traces as CSV. Targets (issue 5): peak RSS ≤ 150 MB at 1M rows, and ≤ 10% more at 3M.
For PARQUET (issue 13; pyarrow and the ADBC driver load in the work horse): ≤ 200 MB at 1M and 3M.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from export_runs import WorkerProcess, export_settings
from export_throughput import seeded_project
from harness import Report, local_servers, peak_rss_kib, table

import db

FORMATS = ("CSV", "JSON", "JSONL", "PARQUET")
TARGET_MB = {"PARQUET": 200}  # the others: 150
MB = 1_000_000  # the target says MB; RSS is reported in MB = 10^6 bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="traces to seed, and the smaller export's rows")
    parser.add_argument(
        "--reuse", type=Path, help="keep Postgres's data here and reuse an earlier seed of the same size"
    )
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)} (default: all)"
    )
    args = parser.parse_args()
    formats = [f.strip().upper() for f in args.formats.split(",")]

    report = Report(f"Export memory, {args.rows:,} traces seeded")
    work = Path(tempfile.mkdtemp(prefix="bx-bench-memory-"))
    results: dict[tuple[str, str], tuple[int, int, float]] = {}
    idle_kib: list[int] = []
    with local_servers(args.reuse) as servers, db.connect(servers.database_url) as conn:
        caller, seed_seconds = seeded_project(conn, servers.folder, args.rows)
        observations = conn.execute(
            "SELECT count(*) AS n FROM observations WHERE project_id = %s", (caller.project_id,)
        ).fetchone()["n"]
        conn.commit()
        print(f"{observations:,} observations", flush=True)
        # The small exports are cut by the row limit; the large one is every observation.
        for size, limit in (("small", args.rows), ("large", observations + 1)):
            env = export_settings(servers.database_url, servers.redis_url, work / "exports", limit)
            worker = WorkerProcess(env, work / f"worker-{size}")
            worker.start()
            try:
                jobs = [("observations", fmt) for fmt in formats]
                if size == "small":
                    jobs.append(("traces", "CSV"))
                for table_name, fmt in jobs:
                    run, _ = worker.run_export(conn, caller, table_name, fmt)
                    results[(size, f"{table_name} {fmt}")] = (run.rows, run.peak_rss_kib, run.seconds)
                    print(
                        f"{table_name:12} {fmt:5} {run.rows:>10,} rows  {run.seconds:6.1f} s"
                        f"  work horse peak RSS {run.peak_rss_kib * 1024 / MB:6.1f} MB",
                        flush=True,
                    )
                idle_kib.append(peak_rss_kib(worker.process.pid) or 0)
            finally:
                worker.stop()

    rows = []
    verdicts = []
    for name in [f"observations {fmt}" for fmt in formats]:
        small_rows, small_kib, _ = results[("small", name)]
        large_rows, large_kib, _ = results[("large", name)]
        growth = large_kib / small_kib - 1
        small_mb, large_mb = small_kib * 1024 / MB, large_kib * 1024 / MB
        rows.append(
            [name, f"{small_rows:,}", f"{small_mb:.1f} MB", f"{large_rows:,}", f"{large_mb:.1f} MB", f"{growth:+.1%}"]
        )
        target = TARGET_MB.get(name.split()[1], 150)
        ok = small_mb <= target and large_mb <= target and growth <= 0.10
        verdicts.append(
            f"{name.split()[1]} {small_mb:.0f} MB → {large_mb:.0f} MB ({growth:+.1%}, {'meets' if ok else 'MISSES'})"
        )
    trace_rows, trace_kib, _ = results[("small", "traces CSV")]
    rows.append(["traces CSV", f"{trace_rows:,}", f"{trace_kib * 1024 / MB:.1f} MB", "", "", ""])
    report.add(
        table(
            ["export", "rows (cut at --rows)", "work horse peak RSS", "rows (all)", "work horse peak RSS", "growth"],
            rows,
        )
    )
    report.add(
        "The real job through `batch-export worker` (file storage); peak RSS is the work horse's VmHWM (RQ forks it"
        " from the worker, so it includes the worker's own interpreter and imports: the worker process itself peaked at "
        + " / ".join(f"{k * 1024 / MB:.0f}" for k in idle_kib)
        + " MB). The smaller observations exports are cut at the row limit (BATCH_EXPORT_ROW_LIMIT = rows); the larger"
        " are every observation of the seed."
        + (f" Seed: {seed_seconds:.0f} s." if seed_seconds is not None else "")
        + "\n\nTargets (≤ 150 MB at 1M rows, ≤ 10% more at 3M; PARQUET ≤ 200 MB at both): "
        + "; ".join(verdicts)
        + "."
    )
    report.save()


if __name__ == "__main__":
    sys.exit(main())
