"""Customer destinations in tests: a fresh bucket (or container) on the real servers, with a key that works
and one that does not, and what the server holds, to check a Store against."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from devstack.servers import LocalAzurite, LocalS3
from schemas.scheduled_exports import AzureDestination, S3Destination

# The prefix the tests' destinations have: every Store key is relative to it.
PREFIX = "team exports/scheduled"


def unique_name(kind: str) -> str:
    """A fresh bucket or container name (lowercase letters, digits and single hyphens)."""
    return f"{kind}-{os.urandom(5).hex()}"


def wrong_azure_key() -> str:
    """An account key of the right shape (64 bytes, base64) that is not the account's."""
    return base64.b64encode(os.urandom(64)).decode()


@dataclass
class Destination:
    """A destination that works with `secret`, and what its server holds at a full key."""

    model: S3Destination | AzureDestination
    secret: str
    # A secret of the same shape that the server does not accept.
    wrong_secret: str
    # The bucket or container's name, as a message about it has to say.
    name: str
    stored: Callable[[str], bytes]
    # The error code the server gives for a bad secret and for a missing bucket or container.
    bad_secret_code: str
    missing_code: str


def s3_destination(server: LocalS3, prefix: str = "") -> Destination:
    bucket = unique_name("bucket")
    server.create_bucket(bucket)
    access_key_id, secret = server.create_key()
    model = S3Destination(
        type="s3", bucket=bucket, prefix=prefix, endpoint=server.url, forcePathStyle=True, accessKeyId=access_key_id
    )
    return Destination(
        model=model,
        secret=secret,
        wrong_secret=secret[::-1],
        name=bucket,
        stored=lambda key: server.object(bucket, key),
        bad_secret_code="SignatureDoesNotMatch",
        missing_code="NoSuchBucket",
    )


def azure_destination(server: LocalAzurite, prefix: str = "") -> Destination:
    container = unique_name("container")
    server.create_container(container)
    model = AzureDestination(
        type="azure", container=container, prefix=prefix, accountName=server.ACCOUNT_NAME, endpoint=server.endpoint
    )
    return Destination(
        model=model,
        secret=server.ACCOUNT_KEY,
        wrong_secret=wrong_azure_key(),
        name=container,
        stored=lambda key: server.blob(container, key),
        bad_secret_code="AuthorizationFailure",
        missing_code="ContainerNotFound",
    )


@contextlib.contextmanager
def hanging_up_endpoint() -> Iterator[str]:
    """An endpoint that accepts each connection and closes it unanswered: reachable, but never answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()
