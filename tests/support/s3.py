"""S3 for real in tests: moto's standalone server on loopback, a fresh bucket per test, and settings that use it."""

from __future__ import annotations

import os

import boto3
import pytest

from devstack.servers import free_port
from schemas.settings import Settings, get_settings


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch) -> str:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_ENDPOINT_URL": s3_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    bucket = f"exports-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return bucket


# The key prefix of s3_settings' storage URL: an export's object is `{S3_PREFIX}/{object_key}`.
S3_PREFIX = "team exports"


@pytest.fixture
def s3_settings(export_settings, s3_bucket, monkeypatch) -> Settings:
    monkeypatch.setenv("EXPORT_STORAGE_URL", f"s3://{s3_bucket}/{S3_PREFIX}")
    get_settings.cache_clear()
    return get_settings()


def stored_object(endpoint: str, bucket: str, object_key: str) -> tuple[str, bytes]:
    """An export's object as S3 holds it under s3_settings: its content type and its bytes."""
    stored = boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=bucket, Key=f"{S3_PREFIX}/{object_key}")
    return stored["ContentType"], stored["Body"].read()
