"""The exports page following a large export live, on `make demo`'s running service: what the page shows as
the export runs, how late after Postgres records each change, and what it asks the API meanwhile.

    make demo DEMO_TRACES=1000000               # once: the service, seeded with a million traces
    .venv/bin/python bench/live_page.py [--screenshot docs/exports-page-live.png]

Opens the page in Debian's chromium (headless, through Playwright), signed in as the demo's user with a
new session, creates a CSV export of every trace with the page's own form, and records, in the page, each
state its row shows (a MutationObserver, stamped with the page's clock) until the export finishes. Every
change Postgres recorded for the export (batch_export_changes) is matched with the moment the page
first showed it; every request the page sent is counted by method.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import timedelta
from pathlib import Path

from harness import REPO, Report, median, table
from playwright.sync_api import sync_playwright

import db
from db import access
from schemas.settings import get_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Records what the export's row shows each time it changes, with the page's clock.
OBSERVE_ROW = """
(exportId) => {
  window.__shown = [];
  const record = () => {
    const row = document.querySelector(`tr[data-export-id="${exportId}"]`);
    if (!row) return;
    const text = row.querySelector(".progress-text")?.textContent ?? "";
    const status = row.dataset.status ?? "";
    const last = window.__shown[window.__shown.length - 1];
    if (!last || last.text !== text || last.status !== status) window.__shown.push({ at: Date.now(), text, status });
  };
  new MutationObserver(record).observe(document.querySelector("#exports-body"), {
    subtree: true, childList: true, characterData: true, attributes: true,
  });
  record();
}
"""


def progress_of(text: str) -> tuple[int | None, int | None, int]:
    """(rows, total rows or None, parts written) of the row's progress text, e.g. "200,000 / 1,000,000 rows ·
    1 of 5 parts written"."""
    numbers = re.match(r"([\d,]+)(?: / ([\d,]+))? rows(?: · ([\d,]+) of [\d,]+ parts written)?", text)
    if numbers is None:
        return None, None, 0
    rows, total, parts = (int(n.replace(",", "")) if n else None for n in numbers.groups())
    return rows, total, parts or 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the demo's API (default: make demo's)")
    parser.add_argument("--screenshot", type=Path, help="a picture of the page half-way through the export")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the export")
    args = parser.parse_args()

    state = json.loads((REPO / ".data" / "demo.json").read_text())
    project_id = state["project_id"]
    database_url = get_settings().DATABASE_URL
    with db.connect(database_url) as conn:
        user = access.upsert_user(conn, "demo@example.com", "Demo User")
        token = access.create_session(conn, user["id"], timedelta(hours=2))
        traces = conn.execute("SELECT count(*) AS n FROM traces WHERE project_id = %s", (project_id,)).fetchone()["n"]
        conn.commit()

    report = Report(f"The exports page following a {traces:,}-trace export live (make demo's service)")
    requests: list[tuple[float, str]] = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, base_url=args.url)

        def sent(request) -> None:
            if request.url.endswith("/rpc") and request.method == "POST":
                body = json.loads(request.post_data or "{}")
                streamed = "text/event-stream" in (request.headers.get("accept") or "")
                requests.append((time.time(), f"{body.get('method')}{' (stream)' if streamed else ''}"))

        page.on("request", sent)
        page.goto(f"/#token={token}&project={project_id}")
        page.locator("#exports-summary").filter(has_text="live").wait_for(timeout=30_000)
        name = f"every trace, live ({time.strftime('%H:%M:%S')})"
        page.fill("#create-name", name)
        page.select_option("#create-table", "traces")
        page.click("#create-submit")
        row = page.locator("#exports-body tr", has_text=name)
        row.wait_for(timeout=30_000)
        export_id = row.get_attribute("data-export-id")
        assert export_id, "the new export's row has no id"
        page.evaluate(OBSERVE_ROW, export_id)
        created_at = time.time()
        settled_requests = len(requests)
        pictured = args.screenshot is None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            status = row.get_attribute("data-status")
            if status in ("COMPLETED", "FAILED", "CANCELLED"):
                break
            if not pictured:
                shown = page.evaluate("window.__shown")
                done = progress_of(shown[-1]["text"])[0] if shown else None
                if done and done >= traces // 2:
                    page.screenshot(path=str(args.screenshot), full_page=False)
                    pictured = True
            time.sleep(0.5)
        shown = page.evaluate("window.__shown")
        browser.close()

    with db.connect(database_url) as conn:
        export = conn.execute("SELECT * FROM batch_exports WHERE id = %s", (export_id,)).fetchone()
        changes = conn.execute(
            "SELECT seq, export->>'status' AS status, (export->>'rows_exported')::bigint AS rows,"
            " (export->>'rows_total')::bigint AS total, (export->>'parts_done')::int AS parts,"
            " (export->>'parts_total')::int AS parts_total, extract(epoch FROM changed_at) AS at"
            " FROM batch_export_changes WHERE export_id = %s ORDER BY seq",
            (export_id,),
        ).fetchall()

    # Each change Postgres recorded, and when the page first showed that status and progress.
    delays = []
    for change in changes:
        parts = change["parts"] if change["parts_total"] > 1 else 0
        wanted = (change["status"], change["rows"], change["total"], parts)
        first = next((s for s in shown if (s["status"], *progress_of(s["text"])) == wanted), None)
        if first is not None:
            delays.append(first["at"] / 1000 - float(change["at"]))
    after_create = [method for at, method in requests[settled_requests:]]
    counted = {method: after_create.count(method) for method in sorted(set(after_create))}
    took = (export["finished_at"] - export["created_at"]).total_seconds()
    rows = [
        [
            "the export",
            f"{export['status']}: {export['rows_exported']:,} rows, {export['parts_total']} part(s), in {took:.0f} s",
        ],
        ["states the row showed (status and progress)", f"{len(shown)}"],
        ["changes Postgres recorded for it", f"{len(changes)}; the page showed {len(delays)} of them"],
        [
            "from a change's commit to the page showing it: p50 / p99 / max",
            f"{median(delays) * 1000:.0f} / {sorted(delays)[int(0.99 * (len(delays) - 1))] * 1000:.0f}"
            f" / {max(delays) * 1000:.0f} ms"
            if delays
            else "-",
        ],
        ["requests the page sent from the create to the end", ", ".join(f"{m}: {n}" for m, n in counted.items())],
        ["…of them batchExport.all", f"{counted.get('batchExport.all', 0)} (polling every second: ~{took:.0f})"],
    ]
    report.add(table(["what", "measured"], rows))
    report.add(
        "The page's own clock stamps what the row shows (a MutationObserver); Postgres's stamps each change"
        " (`changed_at`, the writing transaction's start: a progress write is one statement). Both clocks are"
        " this machine's. The demo runs its API, its workers, Postgres, Redis and this browser on the same"
        f" 2 cores. Created at {time.strftime('%H:%M:%S', time.localtime(created_at))} with the page's form."
        + (f" Screenshot half-way: `{args.screenshot}`." if args.screenshot else "")
    )
    report.save()


if __name__ == "__main__":
    sys.exit(main())
