"""Limits a multi-tenant service owes its users: the active-export cap under concurrency, and tokens and
signatures that are stored and compared the safe way.

(tests/procedures/test_create.py checks the cap one call at a time; here callers race for it.)
"""

from __future__ import annotations

import ast
import hashlib
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from tests.support.abuse import ServedApi, assert_error_object
from tests.support.world import new_project

REPO = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("rpc", "schemas", "procedures", "workers", "db")


def _create_body(project_id: str, n: int) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": n,
        "method": "batchExport.create",
        "params": {"projectId": project_id, "name": f"race {n}", "format": "CSV", "query": {"tableName": "traces"}},
    }


def _race(urls: list[str], project_id: str, token: str, callers: int) -> list[dict]:
    def one(n: int) -> dict:
        response = httpx.post(
            f"{urls[n % len(urls)]}/rpc",
            json=_create_body(project_id, n),
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(one, range(callers)))


def _active(conn: psycopg.Connection, project_id: str) -> int:
    return conn.execute(
        "SELECT count(*) AS n FROM batch_exports WHERE project_id = %s AND status IN ('QUEUED', 'PROCESSING')",
        (project_id,),
    ).fetchone()["n"]


def test_thirty_concurrent_creates_on_two_api_processes_never_exceed_the_cap(abuse_api: ServedApi, api, conn, settings):
    cap = settings.BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT
    project = new_project(conn, "racing for the cap")
    other = new_project(conn, "a neighbour")
    replies = _race([abuse_api.url, api.url], project.id, project.member("MEMBER"), 30)
    accepted = [r for r in replies if "result" in r]
    refused = [r["error"] for r in replies if "error" in r]
    assert len(accepted) == cap, [r.get("error", {}).get("message") for r in replies]
    for error in refused:
        assert_error_object(error)
        assert (error["code"], error["data"]["code"], error["data"]["httpStatus"]) == (-32029, "TOO_MANY_REQUESTS", 429)
        assert str(cap) in error["message"]
    assert _active(conn, project.id) == cap
    # One project's cap is its own: the neighbour is not slowed down.
    assert "result" in _race([abuse_api.url], other.id, other.member("OWNER"), 1)[0]


def test_finishing_or_cancelling_one_export_makes_room_for_exactly_one_more(abuse_api: ServedApi, conn, settings):
    cap = settings.BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT
    project = new_project(conn, "at the cap")
    token = project.member("OWNER")
    exports = [r["result"] for r in _race([abuse_api.url], project.id, token, cap)]
    assert len(exports) == cap and all(e["status"] == "QUEUED" for e in exports)
    conn.execute("UPDATE batch_exports SET status = 'PROCESSING' WHERE id = %s", (exports[0]["id"],))
    conn.execute("UPDATE batch_exports SET status = 'COMPLETED' WHERE id = %s", (exports[1]["id"],))
    cancel = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "batchExport.cancel",
        "params": {"projectId": project.id, "batchExportId": exports[2]["id"]},
    }
    assert "result" in abuse_api.post(_json(cancel), token=token).json()
    replies = _race([abuse_api.url], project.id, token, 5)
    assert sum("result" in r for r in replies) == 2  # the completed one and the cancelled one freed a place each
    assert _active(conn, project.id) == cap


def _json(value) -> bytes:
    import json

    return json.dumps(value).encode()


# --- tokens and signatures ------------------------------------------------------------------------


def test_a_token_is_stored_nowhere_only_its_sha256(abuse_api: ServedApi, conn, redis_client):
    project = new_project(conn, "token storage")
    token = project.member("OWNER")
    # Use it for everything, so any place that might keep it has had the chance.
    created = abuse_api.post(_json(_create_body(project.id, 1)), token=token).json()["result"]
    for method, params in (
        ("batchExport.all", {"projectId": project.id}),
        ("batchExport.downloadUrl", {"projectId": project.id, "batchExportId": created["id"]}),
        ("batchExport.cancel", {"projectId": project.id, "batchExportId": created["id"]}),
    ):
        abuse_api.post(_json({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}), token=token)
    row = conn.execute(
        "SELECT token_hash FROM auth_sessions WHERE token_hash = %s", (hashlib.sha256(token.encode()).digest(),)
    ).fetchone()
    assert row is not None
    secret_part = token.removeprefix("bx_")
    for table in [
        r["relname"]
        for r in conn.execute(
            "SELECT c.relname::text AS relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )
    ]:
        found = conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {} t WHERE strpos(t::text, %s) > 0").format(sql.Identifier(table)),
            (secret_part,),
        ).fetchone()["n"]
        assert found == 0, f"the raw token is stored in {table}"
    for key in redis_client.scan_iter(count=1000):
        for value in _redis_values(redis_client, key):
            assert secret_part.encode() not in value, f"the raw token is in Redis key {key!r}"


def _redis_values(client, key: bytes) -> list[bytes]:
    kind = client.type(key)
    if kind == b"string":
        values = [client.get(key)]
    elif kind == b"hash":
        values = list(client.hgetall(key).values())
    elif kind == b"list":
        values = client.lrange(key, 0, -1)
    elif kind in (b"set", b"zset"):
        values = (
            list(client.smembers(key)) if kind == b"set" else [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        )
    else:
        values = []
    expanded = []
    for value in values:
        expanded.append(value)
        try:
            expanded.append(zlib.decompress(value))  # RQ compresses job data
        except zlib.error:
            pass
    return expanded


def _app_sources() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(encoding="utf-8")))
        for package in APP_PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
    ]


def _names_in(node: ast.AST) -> set[str]:
    return (
        {n.id.lower() for n in ast.walk(node) if isinstance(n, ast.Name)}
        | {n.attr.lower() for n in ast.walk(node) if isinstance(n, ast.Attribute)}
        | {n.arg.lower() for n in ast.walk(node) if isinstance(n, ast.arg)}
    )


SECRET_WORDS = ("token", "sig", "signature", "secret", "digest", "password", "hmac")


def test_no_code_compares_tokens_signatures_or_secrets_with_equality():
    """Equality on secrets leaks timing; tokens are compared by looking up their SHA-256, signatures with compare_digest."""
    offenders = []
    for path, tree in _app_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                sides = [node.left, *node.comparators]
                # Comparing with a literal (None, "", a scheme name) reveals nothing secret.
                if any(isinstance(side, ast.Constant) for side in sides):
                    continue
                names = set().union(*(_names_in(side) for side in sides))
                if any(word in name for name in names for word in SECRET_WORDS):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


def test_download_signatures_are_checked_with_compare_digest():
    tree = ast.parse((REPO / "workers" / "storage.py").read_text(encoding="utf-8"))
    verify = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "verify_download_signature")
    calls = {ast.unparse(n.func) for n in ast.walk(verify) if isinstance(n, ast.Call)}
    assert "hmac.compare_digest" in calls
    downloads = (REPO / "procedures" / "downloads.py").read_text(encoding="utf-8")
    assert "verify_download_signature(" in downloads
