"""clients/ts as a frontend gets it: installs from its lock file, compiles strictly, rejects wrong
inputs at compile time, and its generated files are exactly what the live router produces."""

from __future__ import annotations

import difflib
import json
import re
import shutil

from procedures.app import API_TITLE, API_VERSION, app_router
from rpc.typescript import OPENRPC_FILE, TYPES_FILE, write_client
from tests.ts.client_package import CLIENT_DIR, TSC, compile_alone, diagnostics, run

TYPE_TESTS = CLIENT_DIR / "test" / "type-errors.ts"
README_EXAMPLE = CLIENT_DIR / "examples" / "readme.ts"
_EXPECT_ERROR = re.compile(r"^\s*// @ts-expect-error (?P<reason>.+)$")


def test_the_lock_file_installs_with_npm_ci(tmp_path):
    # A clean copy, so the check cannot lean on an existing node_modules.
    for name in ("package.json", "package-lock.json"):
        shutil.copy(CLIENT_DIR / name, tmp_path / name)
    result = run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "node_modules" / "json-schema-to-typescript").is_dir()


def test_client_type_tests_and_examples_compile_under_strict(node_modules):
    result = run([TSC, "--noEmit", "--strict", "-p", "tsconfig.json", "--pretty", "false"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_wrong_input_in_the_type_tests_fails_to_compile_for_its_reason(node_modules, tmp_path):
    # Without the directives, exactly the marked lines must fail, each with its reason in the message:
    # an @ts-expect-error alone would also be satisfied by an unrelated mistake on that line.
    lines = TYPE_TESTS.read_text(encoding="utf-8").splitlines()
    expected: dict[int, str] = {}
    for number, text in enumerate(lines, start=1):
        match = _EXPECT_ERROR.match(text)
        if match:
            expected[number + 1] = match["reason"]
            lines[number - 1] = "//"
    assert len(expected) >= 4
    stripped = tmp_path / "type-errors.ts"
    client_module = (CLIENT_DIR / "src" / "client.js").as_posix()
    stripped.write_text("\n".join(lines).replace('"../src/client.js"', json.dumps(client_module)), encoding="utf-8")

    result = compile_alone([stripped], tmp_path)

    errors: dict[int, list[str]] = {}
    for _file, line, message in diagnostics(result.stdout):
        errors.setdefault(line, []).append(message)
    assert set(errors) == set(expected), result.stdout
    for line, reason in expected.items():
        assert any(reason in message for message in errors[line]), (line, reason, errors[line])


def test_the_readme_example_compiles(node_modules, tmp_path):
    result = compile_alone([README_EXAMPLE], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_openrpc_document_passes_validate_openrpc_document(node_modules):
    result = run(["node", "scripts/validate-openrpc.mjs", OPENRPC_FILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_regenerating_from_the_router_changes_no_committed_file(node_modules, tmp_path):
    write_client(app_router, tmp_path, info={"title": API_TITLE, "version": API_VERSION}, package_dir=CLIENT_DIR)
    for relative in (TYPES_FILE, OPENRPC_FILE):
        committed = (CLIENT_DIR / relative).read_text(encoding="utf-8")
        fresh = (tmp_path / relative).read_text(encoding="utf-8")
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(True), fresh.splitlines(True), f"committed/{relative}", f"generated/{relative}"
            )
        )
        assert committed == fresh, f"clients/ts/{relative} is stale; run `make types`:\n{diff[:4000]}"


def test_the_served_document_is_the_committed_file(api, client):
    served = client.http.get(f"{api.url}/rpc/openrpc.json").json()
    assert served == json.loads((CLIENT_DIR / OPENRPC_FILE).read_text(encoding="utf-8"))
