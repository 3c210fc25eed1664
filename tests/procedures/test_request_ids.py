"""Every response carries X-Request-ID: the caller's own when it is sane, else one made for the request."""

from __future__ import annotations

import httpx
import pytest


def test_a_request_without_an_id_gets_a_new_one_on_every_response(api):
    first = httpx.get(f"{api.url}/healthz", timeout=30).headers["x-request-id"]
    second = httpx.post(f"{api.url}/rpc", content=b"{not json", timeout=30).headers["x-request-id"]
    assert len(first) == len(second) == 32 and first != second


def test_a_sane_caller_id_is_answered_back(api):
    sent = "Root=1-67891233-abcdef012345678912345678"
    assert httpx.get(f"{api.url}/readyz", headers={"X-Request-ID": sent}, timeout=30).headers["x-request-id"] == sent


@pytest.mark.parametrize("forged", ["x" * 129, "two words", "line\tbreak"])
def test_an_id_too_long_or_with_spaces_or_controls_is_replaced(api, forged):
    answered = httpx.get(f"{api.url}/healthz", headers={"X-Request-ID": forged}, timeout=30).headers["x-request-id"]
    assert answered != forged and len(answered) == 32
