"""Download links, attacked over HTTP: forged, altered, replayed after expiry, or borrowed from another export → 403.

And export names chosen to escape the storage folder end up as one harmless file name under
`{projectId}/{exportId}/`, downloadable through the same route.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest

from schemas.settings import INSECURE_DEV_SECRET
from tests.support.abuse import CANARY, Arena, ServedApi
from tests.support.exports import run_export
from tests.support.rpc_client import RpcClient
from tests.support.world import TEST_SECRET_KEY
from workers.storage import signed_download_query


class Link:
    def __init__(self, url: str):
        parsed = urlparse(url)
        self.base = f"{parsed.scheme}://{parsed.netloc}{parsed.path}"
        self.params = {k: v[0] for k, v in parse_qs(parsed.query, keep_blank_values=True).items()}

    def with_(self, **changes) -> str:
        params = {**self.params, **changes}
        return f"{self.base}?{urlencode({k: v for k, v in params.items() if v is not None})}"


_http = httpx.Client(timeout=15)


def get(url: str) -> httpx.Response:
    return _http.get(url)


def refused(response: httpx.Response) -> bool:
    return (
        response.status_code == 403
        and response.json()["error"]["code"] == "FORBIDDEN"
        and CANARY.encode() not in response.content
    )


def finished_export(
    client: RpcClient, arena: Arena, conn, workdir: Path, *, name: str = "mine", table: str = "traces"
) -> dict:
    created = client.result(
        "batchExport.create",
        {"projectId": arena.attacker.id, "name": name, "format": "CSV", "query": {"tableName": table}},
        token=arena.attacker_owner,
    )
    row = run_export(conn, created["id"], workdir)
    assert row["status"] == "COMPLETED", row["log"]
    return row


def link_for(client: RpcClient, arena: Arena, export_id: str) -> Link:
    answer = client.result(
        "batchExport.downloadUrl",
        {"projectId": arena.attacker.id, "batchExportId": export_id},
        token=arena.attacker_owner,
    )
    return Link(answer["url"])


@pytest.fixture(scope="module")
def two_exports(abuse_api: ServedApi, arena: Arena, module_conn, tmp_path_factory) -> list[dict]:
    client = RpcClient(abuse_api.url)
    workdir = tmp_path_factory.mktemp("links")
    exports = [finished_export(client, arena, module_conn, workdir, name=n) for n in ("first", "second")]
    client.http.close()
    return exports


def test_the_genuine_link_works(abuse_client, arena, two_exports):
    response = get(link_for(abuse_client, arena, two_exports[0]["id"]).with_())
    assert response.status_code == 200 and response.content.startswith(b"id,")


def test_forged_signatures_are_refused(abuse_client, arena, two_exports, abuse_api):
    link = link_for(abuse_client, arena, two_exports[0]["id"])
    key, expires = link.params["key"], link.params["expires"]
    sig = link.params["sig"]
    forged = [
        "0" * 64,
        "f" * 64,
        "",
        sig[:-1],
        sig + "0",
        sig.upper(),
        sig[:32],
        " " + sig,
        sig * 2,
        "%00",
        "null",
        # Signed with secrets the attacker might guess: the development default, the test suite's own.
        *(
            parse_qs(signed_download_query(key, datetime.fromtimestamp(int(expires), UTC), _settings_with(secret)))[
                "sig"
            ][0]
            for secret in (INSECURE_DEV_SECRET, TEST_SECRET_KEY)
        ),
    ]
    for bad in forged:
        assert refused(get(link.with_(sig=bad))), bad
    # The server's own secret does sign a working link: the refusals above are about the signature.
    assert get(link.with_(sig=_sign(key, int(expires), abuse_api.secrets["SECRET_KEY"]))).status_code == 200


def test_each_altered_parameter_is_refused(abuse_client, arena, two_exports):
    link = link_for(abuse_client, arena, two_exports[0]["id"])
    key, expires = link.params["key"], int(link.params["expires"])
    project, export, filename = key.split("/")
    altered = [
        {"key": key.replace(".csv", ".json")},
        {"key": f"{project}/{export}/other.csv"},
        {"key": key + "/"},
        {"key": f"{project}/../{project}/{export}/{filename}"},
        {"key": "../" * 8 + "etc/passwd"},
        {"key": "/" + key},
        {"key": key.upper()},
        {"key": arena.victim_export["object_key"]},
        {"key": ""},
        {"expires": str(expires + 1)},
        {"expires": str(expires - 1)},
        {"expires": str(expires + 10**9)},
        {"expires": "-1"},
        {"expires": "1e12"},
        {"expires": "9" * 400},
        {"expires": ""},
        {"expires": "now"},
        {"key": None},
        {"expires": None},
        {"sig": None},
    ]
    for change in altered:
        assert refused(get(link.with_(**change))), change


def test_a_signature_of_one_export_opens_no_other(abuse_client, arena, two_exports):
    first, second = (link_for(abuse_client, arena, e["id"]) for e in two_exports)
    assert refused(get(second.with_(sig=first.params["sig"])))
    assert refused(get(second.with_(sig=first.params["sig"], expires=first.params["expires"])))
    assert refused(get(first.with_(key=second.params["key"])))
    # Nor another project's file, with a genuine signature of the caller's own.
    assert refused(get(first.with_(key=arena.victim_export["object_key"])))


def test_a_link_replayed_after_it_expired_is_refused(abuse_client, arena, two_exports, module_conn):
    export_id = two_exports[1]["id"]
    # The file itself expires in two seconds, so the link handed out does too.
    module_conn.execute(
        "UPDATE batch_exports SET expires_at = now() + interval '2 seconds' WHERE id = %s", (export_id,)
    )
    link = link_for(abuse_client, arena, export_id)
    assert get(link.with_()).status_code == 200
    deadline = time.monotonic() + 10
    while get(link.with_()).status_code == 200:
        assert time.monotonic() < deadline, "the link still works long after it expired"
        time.sleep(0.25)
    assert refused(get(link.with_()))
    module_conn.execute("UPDATE batch_exports SET expires_at = now() + interval '1 day' WHERE id = %s", (export_id,))


def test_a_link_signed_by_the_server_but_already_expired_is_refused(abuse_api, two_exports):
    key = two_exports[0]["object_key"]
    stale = signed_download_query(
        key, datetime.now(UTC) - timedelta(seconds=2), _settings_with(abuse_api.secrets["SECRET_KEY"])
    )
    assert refused(get(f"{abuse_api.url}/exports/download?{stale}"))


HOSTILE_NAMES = [
    "../../../../etc/passwd",
    "..",
    "/absolute/path",
    "a/../../b",
    "..\\..\\windows\\win.ini",
    "%2e%2e%2fescape",
    "．．／fullwidth",
    "name\r\nSet-Cookie: x=1",
    'quote"; filename="evil.exe',
    "CON",
    "~/.ssh/id_rsa",
    "a" * 255,
]


def test_hostile_export_names_become_one_safe_file_under_the_exports_prefix(abuse_client, arena, conn, tmp_path):
    for name in HOSTILE_NAMES:
        row = finished_export(abuse_client, arena, conn, tmp_path, name=name, table="scores")
        project, export, filename = row["object_key"].split("/")
        assert (project, export) == (arena.attacker.id, row["id"]), row["object_key"]
        assert filename.endswith(".csv") and ".." not in filename and not set(filename) & set('/\\\r\n"%')
        path = (arena.storage_root / row["object_key"]).resolve()
        assert path.is_file() and path.parent == (arena.storage_root / arena.attacker.id / row["id"]).resolve()
        response = get(link_for(abuse_client, arena, row["id"]).with_())
        assert response.status_code == 200, name
        disposition = response.headers["content-disposition"]
        assert "\r" not in disposition and "\n" not in disposition and "set-cookie" not in response.headers
        assert disposition.startswith(f'attachment; filename="{filename}"'), disposition


def _settings_with(secret: str):
    class Signing:
        SECRET_KEY = secret

    return Signing()


def _sign(key: str, expires: int, secret: str) -> str:
    return parse_qs(signed_download_query(key, datetime.fromtimestamp(expires, UTC), _settings_with(secret)))["sig"][0]
