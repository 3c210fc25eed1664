"""Fixtures for scheduled exports' destinations, on the session's S3 (moto, checking credentials) and Azurite."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from devstack.servers import LocalS3
from tests.support.destinations import PREFIX, Destination, azure_destination, s3_destination

# local_s3 and local_azurite, the session's servers, come from tests/support/destination_servers.py.


# Each destination test runs against both kinds, under a prefix with a space in it.
@pytest.fixture(params=["s3", "azure"])
def destination(request: pytest.FixtureRequest) -> Destination:
    if request.param == "s3":
        return s3_destination(request.getfixturevalue("local_s3"), prefix=PREFIX)
    return azure_destination(request.getfixturevalue("local_azurite"), prefix=PREFIX)


@pytest.fixture
def s3(local_s3: LocalS3) -> Destination:
    return s3_destination(local_s3, prefix=PREFIX)


@pytest.fixture(autouse=True)
def every_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged during a test, down to the HTTP clients' debug lines (checked for secrets)."""
    caplog.set_level(logging.DEBUG)
    yield caplog
