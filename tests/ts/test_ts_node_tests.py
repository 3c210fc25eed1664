"""The client's own tests that need no server, run by node's test runner (clients/ts/test/*.test.ts):
the event-stream parser, and what ends, reopens and resumes a subscription."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ts.client_package import CLIENT_DIR, run

NODE_TESTS = sorted(path.name.removesuffix(".ts") for path in (CLIENT_DIR / "test").glob("*.test.ts"))


@pytest.mark.parametrize("name", NODE_TESTS)
def test_node_tests_pass(compiled: Path, name: str):
    result = run(["node", "--test", compiled / "test" / f"{name}.js"], timeout=120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
    assert "# fail 0" in result.stdout
