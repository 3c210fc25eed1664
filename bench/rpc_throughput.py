"""RPC overhead: a trivial authenticated procedure through the full stack, against bare Starlette and tRPC.

    .venv/bin/python bench/rpc_throughput.py [--duration 10] [--rounds 3] [--connections 32]

Starts its own Postgres and Redis, a caller (user, session token, MEMBER of the projects), and
three servers of one process each: the full stack (`bench/rpc_app.py:full_stack_app`, uvicorn,
no access log), a bare Starlette endpoint answering the same bytes (`rpc_app:bare_app`), and a
tRPC v11 standalone Node server with the same procedure (`bench/trpc/server.mjs`). wrk (loopback,
one thread, 32 connections, `--latency`) drives each in turn, every round in the same order, so
each ratio compares figures measured minutes apart: bench.ping through the full stack, bare
Starlette, tRPC's bench.ping as its httpLink calls it (GET ?input=), `batchExport.all` returning
20 exports, and `batchExport.create` spread over 32 projects and within one project.

Targets: bench.ping through the full stack ≥ 0.5× bare Starlette and ≥ 2× tRPC on uvicorn[standard]
(issue 17; issue 5 asked 0.6× bare); create ≥ 500 calls/s with p99 ≤ 100 ms (issue 5).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from harness import REPO, Report, free_port, local_servers, median, stop, table, wait_for_port

import db
from db import access, batch_exports

BENCH = REPO / "bench"
CREATE_PROJECTS = 32
CREATE_PARAMS = (
    '{"projectId":"$PROJECT","name":"bench export","format":"CSV",'
    '"query":{"tableName":"traces","filter":[],"orderBy":null}}'
)


@dataclass
class Target:
    name: str
    url: str
    script: str
    env: dict[str, str]


@dataclass
class WrkRun:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str


def parse_wrk(output: str) -> WrkRun:
    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = "; ".join(
        m.strip() for m in re.findall(r"^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$", output, re.M)
    )
    return WrkRun(rps, p50, p99, requests, errors)


def wrk(target: Target, seconds: int, connections: int) -> WrkRun:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", target.script, target.url]
    result = subprocess.run(argv, env={**os.environ, **target.env}, capture_output=True, text=True, check=True)
    run = parse_wrk(result.stdout)
    if run.requests == 0:
        raise RuntimeError(f"wrk completed no request against {target.name}:\n{result.stdout}{result.stderr}")
    return run


def call_once(target: Target, token: str) -> dict:
    """One request like wrk's; the benchmark refuses to measure an endpoint that answers with an error."""
    if target.script.endswith("jsonrpc.lua"):
        params = target.env["BENCH_PARAMS"].replace("$PROJECT", target.env["BENCH_PROJECTS"].split()[0])
        body = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": target.env["BENCH_METHOD"], "params": json.loads(params)}
        )
        request = urllib.request.Request(
            target.url,
            body.encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
    else:
        request = urllib.request.Request(target.url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        reply = json.loads(response.read())
    if "error" in reply:
        raise RuntimeError(f"{target.name} answered an error: {reply['error']}")
    return reply


def start_profile(pid: int, folder: Path, name: str, seconds: int) -> subprocess.Popen:
    """py-spy samples the server while wrk drives it (raw collapsed stacks, one file per target)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".txt")
    py_spy = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
    return subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-d", str(max(1, seconds - 1)), "-r", "200", "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class ExportDrain(threading.Thread):
    """Plays the workers: marks created exports COMPLETED every 100 ms, so projects hold few active exports."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.database_url = database_url
        self._stopping = threading.Event()

    def run(self) -> None:
        with db.connect(self.database_url, autocommit=True) as conn:
            while not self._stopping.wait(0.1):
                conn.execute(
                    "UPDATE batch_exports SET status = 'COMPLETED', finished_at = now() WHERE status = 'QUEUED'"
                )

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def _uvicorn_stack() -> str:
    """The loop and HTTP parser uvicorn picks as installed (uvicorn[standard]: uvloop and httptools)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"with {loop} and {parser}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--only", action="append", help="run only the targets whose name contains this (repeatable)")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of the full-stack server into this folder")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    if not (BENCH / "trpc" / "node_modules" / "@trpc" / "server").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH / "trpc", check=True)

    report = Report(f"RPC throughput, wrk -t1 -c{args.connections} -d{args.duration}s")
    work = Path(tempfile.mkdtemp(prefix="bx-bench-rpc-"))
    processes: list[subprocess.Popen] = []
    with local_servers() as servers:
        with db.connect(servers.database_url) as conn:
            ping_project = access.create_project(conn, "bench ping")
            list_project = access.create_project(conn, "bench list")
            create_projects = [access.create_project(conn, f"bench create {i}") for i in range(CREATE_PROJECTS)]
            user = access.upsert_user(conn, "bench@bench.invalid", "Bench User")
            for project in [ping_project, list_project, *create_projects]:
                access.set_org_role(conn, project["org_id"], user["id"], "NONE")
                access.set_project_role(conn, project["id"], user["id"], "MEMBER")
            token = access.create_session(conn, user["id"], timedelta(days=1))
            for i in range(20):
                conn.execute(
                    batch_exports.INSERT_SQL,
                    batch_exports.insert_params(
                        project_id=list_project["id"],
                        user_id=user["id"],
                        name=f"export {i}",
                        format="CSV",
                        query={"tableName": "traces", "filter": [], "orderBy": None},
                    ),
                )
            conn.execute("UPDATE batch_exports SET status = 'COMPLETED', finished_at = now(), rows_exported = 1000")
            conn.commit()

        env = {
            **os.environ,
            "DATABASE_URL": servers.database_url,
            "REDIS_URL": servers.redis_url,
            "EXPORT_STORAGE_URL": (work / "exports").as_uri(),
            # The drain below keeps active exports few; the cap on them is not what is measured.
            "BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT": "1000000",
            "BENCH_PROJECT_ID": ping_project["id"],
            "BENCH_TOKEN": token,
        }
        ports = {name: free_port() for name in ("full", "bare", "trpc")}
        uvicorn = [
            str(REPO / ".venv" / "bin" / "uvicorn"),
            "--app-dir",
            str(BENCH),
            "--factory",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
            "--host",
            "127.0.0.1",
        ]
        try:
            log = (work / "servers.log").open("ab")
            processes.append(
                subprocess.Popen(
                    [*uvicorn, "--port", str(ports["full"]), "rpc_app:full_stack_app"],
                    env=env,
                    cwd=work,
                    stdout=log,
                    stderr=log,
                )
            )
            processes.append(
                subprocess.Popen(
                    [*uvicorn, "--port", str(ports["bare"]), "rpc_app:bare_app"],
                    env=env,
                    cwd=work,
                    stdout=log,
                    stderr=log,
                )
            )
            processes.append(
                subprocess.Popen(
                    ["node", str(BENCH / "trpc" / "server.mjs")],
                    env={**env, "BENCH_PORT": str(ports["trpc"]), "NODE_ENV": "production"},
                    cwd=BENCH / "trpc",
                    stdout=log,
                    stderr=log,
                )
            )
            for port in ports.values():
                wait_for_port(port)

            def rpc_target(name: str, port: int, method: str, params: str, projects: list[str]) -> Target:
                return Target(
                    name,
                    f"http://127.0.0.1:{port}/rpc",
                    str(BENCH / "wrk" / "jsonrpc.lua"),
                    {
                        "BENCH_METHOD": method,
                        "BENCH_PARAMS": params,
                        "BENCH_TOKEN": token,
                        "BENCH_PROJECTS": " ".join(projects),
                    },
                )

            ping_params = '{"projectId":"$PROJECT"}'
            trpc_input = urllib.parse.quote(json.dumps({"projectId": ping_project["id"]}, separators=(",", ":")))
            targets = [
                rpc_target("bench.ping, full stack", ports["full"], "bench.ping", ping_params, [ping_project["id"]]),
                rpc_target(
                    "bare Starlette, same reply", ports["bare"], "bench.ping", ping_params, [ping_project["id"]]
                ),
                Target(
                    "tRPC v11 bench.ping (Node)",
                    f"http://127.0.0.1:{ports['trpc']}/bench.ping?input={trpc_input}",
                    str(BENCH / "wrk" / "trpc_query.lua"),
                    {"BENCH_TOKEN": token},
                ),
                rpc_target(
                    "batchExport.all, 20 rows",
                    ports["full"],
                    "batchExport.all",
                    '{"projectId":"$PROJECT","limit":20}',
                    [list_project["id"]],
                ),
                rpc_target(
                    f"batchExport.create, {CREATE_PROJECTS} projects",
                    ports["full"],
                    "batchExport.create",
                    CREATE_PARAMS,
                    [p["id"] for p in create_projects],
                ),
                rpc_target(
                    "batchExport.create, 1 project",
                    ports["full"],
                    "batchExport.create",
                    CREATE_PARAMS,
                    [create_projects[0]["id"]],
                ),
            ]
            if args.only:
                targets = [t for t in targets if any(o in t.name for o in args.only)]
            for target in targets:
                reply = call_once(target, token)
                if target.name.startswith("batchExport.all") and len(reply["result"]["exports"]) != 20:
                    raise RuntimeError(f"batchExport.all returned {len(reply['result']['exports'])} exports, not 20")
            drain = ExportDrain(servers.database_url)
            drain.start()
            for target in targets:  # warm-up: imports, pools, JIT
                wrk(target, 2, args.connections)

            runs: dict[str, list[WrkRun]] = {t.name: [] for t in targets}
            with db.connect(servers.database_url, autocommit=True) as conn:
                for round_no in range(args.rounds):
                    for target in targets:
                        before = conn.execute("SELECT count(*) AS n FROM batch_exports").fetchone()["n"]
                        spy = None
                        if args.profile and round_no == 0 and str(ports["full"]) in target.url:
                            spy = start_profile(processes[0].pid, args.profile, target.name, args.duration)
                        run = wrk(target, args.duration, args.connections)
                        if spy is not None:
                            spy.wait()
                        if "create" in target.name:
                            created = conn.execute("SELECT count(*) AS n FROM batch_exports").fetchone()["n"] - before
                            if created < run.requests:
                                run.errors += f" only {created} of {run.requests} calls created an export"
                        runs[target.name].append(run)
                        print(
                            f"round {round_no + 1} {target.name:34} {run.requests_per_s:9,.0f} req/s"
                            f"  p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:7.2f} ms {run.errors}",
                            flush=True,
                        )
            drain.stop()
        finally:
            for process in processes:
                stop(process)
        shutil.rmtree(work, ignore_errors=True)

    if args.only:
        for name, rs in runs.items():
            print(name, " / ".join(f"{r.requests_per_s:,.0f} req/s p99 {r.p99_ms:.1f} ms" for r in rs))
        return  # a partial run is for investigating, not for RESULTS.md
    med = {name: median([r.requests_per_s for r in rs]) for name, rs in runs.items()}
    full, bare, trpc = (med[t.name] for t in targets[:3])
    rows = []
    for target in targets:
        rs = runs[target.name]
        rows.append(
            [
                target.name,
                f"{med[target.name]:,.0f}",
                f"{median([r.p50_ms for r in rs]):.2f}",
                f"{median([r.p99_ms for r in rs]):.2f}",
                f"{med[target.name] / bare:.2f}",
                " / ".join(f"{r.requests_per_s:,.0f}" for r in rs),
                "; ".join(r.errors for r in rs if r.errors) or "none",
            ]
        )
    report.add(
        table(["server / call", "req/s (median)", "p50 ms", "p99 ms", "× bare Starlette", "rounds", "errors"], rows)
    )
    create = next(t.name for t in targets if t.name.startswith("batchExport.create"))
    create_rps, create_p99 = med[create], median([r.p99_ms for r in runs[create]])
    verdicts = [
        f"full stack / bare Starlette **{full / bare:.2f}** ({'meets' if full / bare >= 0.5 else 'MISSES'} ≥ 0.5)",
        f"full stack / tRPC **{full / trpc:.2f}** ({'meets' if full / trpc >= 2 else 'MISSES'} ≥ 2)",
        f"create {create_rps:,.0f} calls/s, p99 {create_p99:.0f} ms"
        f" ({'meets' if create_rps >= 500 and create_p99 <= 100 else 'MISSES'} ≥ 500/s with p99 ≤ 100 ms)",
    ]
    report.add(
        f"Medians of {args.rounds} rounds; in each round every target ran {args.duration} s in the order above. Servers:"
        f" one process each, uvicorn {_uvicorn_stack()}, no access log; Node "
        + subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        + " with NODE_ENV=production. bench.ping resolves the session and the project role through the"
        " product's access cache (one Postgres query per token and project, then memory until access changes or"
        " SESSION_CACHE_SECONDS pass); tRPC's checks the same token and role in memory. create calls are spread round-robin over the projects named;"
        " a thread marks QUEUED exports COMPLETED every 100 ms as workers would, and"
        " BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT is raised so the cap on active exports is not what is measured.\n\n"
        "Targets: " + "; ".join(verdicts) + "."
    )
    report.save()


if __name__ == "__main__":
    sys.exit(main())
