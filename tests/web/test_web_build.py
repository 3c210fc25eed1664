"""The exports page's committed files are what their sources build, and the app serves them beside its API."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.support.web import WEB_DIR, run
from workers.tables import TABLES


def test_tables_json_is_what_the_table_definitions_generate():
    generated = subprocess.run(
        [sys.executable, str(WEB_DIR / "scripts" / "tables_json.py"), "--stdout"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (WEB_DIR / "public" / "tables.json").read_text(encoding="utf-8")
    assert generated == committed, "web/public/tables.json is stale: run `make web` and commit it"


def test_the_committed_bundle_is_what_the_sources_build(web_node_modules, tmp_path):
    result = run(["node", "build.mjs", "--outfile", tmp_path / "app.js"])
    assert result.returncode == 0, result.stdout + result.stderr
    committed = (WEB_DIR / "public" / "app.js").read_bytes()
    assert (tmp_path / "app.js").read_bytes() == committed, "web/public/app.js is stale: run `make web` and commit it"


def test_the_page_sources_typecheck_against_the_generated_client(web_node_modules):
    result = run([web_node_modules / ".bin" / "tsc", "--noEmit", "-p", "tsconfig.json", "--pretty", "false"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_app_serves_the_page_at_the_root_and_keeps_its_api_routes(api):
    with httpx.Client(base_url=api.url, timeout=30) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'src="static/app.js"' in page.text
        script = http.get("/static/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        catalog = http.get("/static/tables.json").json()
        assert [t["name"] for t in catalog["tables"]] == list(TABLES)
        # The page takes `/` and `/static/`, nothing else: the API's own answers are unchanged.
        assert http.get("/rpc").status_code == 405
        assert http.get("/healthz").status_code == 200
        assert http.get("/exports/download").status_code == 403
        assert http.get("/no-such-page").status_code == 404
