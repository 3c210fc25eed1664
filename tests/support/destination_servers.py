"""The customers' storage servers for scheduled exports, one of each per test session: S3 (moto, checking
credentials) and Azurite. Offered to every suite (tests/conftest.py's pytest_plugins): tests/scheduled and the
page's tests in tests/web write into them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.servers import LocalAzurite, LocalS3
from tests.support.servers import running_azurite, running_s3


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    with running_s3() as server:
        yield server


@pytest.fixture(scope="session")
def local_azurite() -> Iterator[LocalAzurite]:
    with running_azurite() as server:
        yield server
