"""The customer's own bucket a scheduled export writes into: an S3 bucket or an Azure container, as one Store.

Every failure becomes a DestinationError worded from what the destination said (its error code and
message, or the OS error of a connection that failed), never containing the secret; `refused` tells
a bad or revoked credential, on which a schedule disables itself, from a failure that may pass.
Clients have short timeouts and few retries, so a dead endpoint answers in seconds, not minutes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

from schemas.scheduled_exports import AzureDestination, S3Destination, ValidationResult

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
# Attempts of one request, the first included: enough for a dropped connection, few enough to fail fast.
ATTEMPTS = 3

# Error codes that mean the credentials were rejected (authentication) or lack a permission (authorization).
S3_REFUSALS = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
AZURE_REFUSALS = frozenset(
    {
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch",
        "AuthorizationServiceMismatch",
        "AuthorizationSourceIPMismatch",
        "InsufficientAccountPermissions",
        "InvalidAuthenticationInfo",
        "KeyBasedAuthenticationNotPermitted",
    }
)

VALIDATION_KEY_PREFIX = ".batch-export-validate-"

T = TypeVar("T")


class DestinationError(Exception):
    """What the destination said, in its own words (never containing the secret)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # The destination rejected the credentials: retrying will not help, the schedule is disabled.
        self.refused = refused


class Store(Protocol):
    """One connected destination; keys are relative to the destination's prefix."""

    def full_key(self, key: str) -> str: ...

    def upload(self, key: str, path: Path) -> None: ...

    def read(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def keys(self, under: str = "") -> list[str]: ...


def connect(destination: S3Destination | AzureDestination, secret: str) -> Store:
    """The destination as a Store, signed with `secret` (the caller's decrypted secret, not the model's)."""
    if isinstance(destination, S3Destination):
        return S3Store(destination, secret)
    return AzureStore(destination, secret)


def validate(destination: S3Destination | AzureDestination, secret: str) -> ValidationResult:
    """Writes a small object, reads it back and deletes it: whether an export could be written there now."""
    try:
        store = connect(destination, secret)
        key = f"{VALIDATION_KEY_PREFIX}{secrets.token_hex(8)}"
        payload = f"batch-export validation {key}\n".encode()
        with tempfile.TemporaryDirectory(prefix="bx-validate-") as folder:
            path = Path(folder) / "object"
            path.write_bytes(payload)
            store.upload(key, path)
        try:
            read_back = store.read(key)
        except DestinationError:
            # The read's failure is the news; a failed clean-up after it would only hide it.
            with contextlib.suppress(DestinationError):
                store.delete(key)
            raise
        store.delete(key)
        if read_back != payload:
            return ValidationResult(
                ok=False, message=f"{store.full_key(key)} in {_where(destination)} read back different bytes"
            )
    except DestinationError as error:
        return ValidationResult(ok=False, message=error.message)
    return ValidationResult(
        ok=True, message=f"wrote, read back and deleted {store.full_key(key)} in {_where(destination)}"
    )


# --- keys -----------------------------------------------------------------------------------------


def _relative_key(key: str) -> str:
    # Keys come from the export engine; one that climbs out of the prefix is a bug, not a destination's error.
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"not a relative object key: {key!r}")
    return key


def _full_key(prefix: str, key: str) -> str:
    return f"{prefix}/{_relative_key(key)}" if prefix else _relative_key(key)


def _listing_prefix(prefix: str, under: str) -> str:
    """What every object key under `prefix`/`under` starts with ('' for the whole bucket)."""
    folder = "/".join(part for part in (prefix, under.strip("/")) if part)
    return f"{folder}/" if folder else ""


def _where(destination: S3Destination | AzureDestination) -> str:
    if isinstance(destination, S3Destination):
        return f"bucket '{destination.bucket}'"
    return f"container '{destination.container}' of account '{destination.accountName}'"


def _host_port(url: str) -> str:
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{parsed.hostname}:{port}"


# --- errors -----------------------------------------------------------------------------------------


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and what it wraps, through causes, contexts and the attributes the HTTP libraries use."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending and len(seen) < 50:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        # botocore keeps the urllib3 error in kwargs["error"], urllib3 its reason, azure-core its inner_exception.
        kwargs = getattr(current, "kwargs", None)
        wrapped = [
            kwargs.get("error") if isinstance(kwargs, dict) else None,
            getattr(current, "reason", None),
            getattr(current, "inner_exception", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        pending.extend(item for item in wrapped if isinstance(item, BaseException))


def _os_error(error: BaseException) -> str | None:
    """The operating system's words for a failed connection: Connection refused, Name or service not known …"""
    causes = list(_causes(error))
    # requests' errors are OSErrors too, but without an errno: their text is a paragraph, not the OS's words.
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    for cause in causes:
        if isinstance(cause, TimeoutError):
            return "timed out"
    return None


def _unreachable(host: str, error: BaseException) -> DestinationError:
    return DestinationError(f"cannot reach {host}: {_os_error(error) or error}")


def _broken_off(doing: str, where: str, host: str, error: BaseException) -> DestinationError:
    """The connection was made, but no complete answer came back: a read timeout, or a connection dropped."""
    reason = _os_error(error) or error
    if reason == "timed out":
        reason = f"timed out after {READ_TIMEOUT_SECONDS} s"
    return DestinationError(f"{doing} in {where}: no complete answer from {host} ({reason})")


def _redacted(error: DestinationError, secret: str) -> DestinationError:
    # No destination echoes a secret that we know of; this keeps it so should one ever do.
    if secret and secret in error.message:
        return DestinationError(error.message.replace(secret, "[secret]"), refused=error.refused)
    return error


# --- S3 ---------------------------------------------------------------------------------------------


class S3Store:
    """An S3 bucket (AWS or S3-compatible at `endpoint`), through boto3."""

    def __init__(self, destination: S3Destination, secret: str) -> None:
        import boto3
        from botocore.config import Config

        self.destination = destination
        self.bucket = destination.bucket
        self.prefix = destination.prefix
        self._secret = secret
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": "path"} if destination.forcePathStyle else {},
            # Checksums only where S3 requires them: several S3-compatible stores reject boto3's newer defaults.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session of its own: nothing from the worker's environment (AWS_* variables, profiles) signs for us.
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=destination.endpoint,
            region_name=destination.region,
            aws_access_key_id=destination.accessKeyId,
            aws_secret_access_key=secret,
            config=config,
        )
        self.host = _host_port(self._client.meta.endpoint_url)

    def full_key(self, key: str) -> str:
        return _full_key(self.prefix, key)

    def upload(self, key: str, path: Path) -> None:
        from boto3.s3.transfer import TransferConfig

        full_key = self.full_key(key)
        # Above the threshold, a multipart upload: the object appears only when it is completed.
        transfer = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024)
        self._call(
            f"upload of {full_key}", lambda: self._client.upload_file(str(path), self.bucket, full_key, Config=transfer)
        )

    def read(self, key: str) -> bytes:
        full_key = self.full_key(key)

        def read() -> bytes:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=full_key)["Body"].read()
            return body

        return self._call(f"read of {full_key}", read)

    def delete(self, key: str) -> None:
        full_key = self.full_key(key)
        # S3 answers a delete of a missing key with success, as this Store promises.
        self._call(f"delete of {full_key}", lambda: self._client.delete_object(Bucket=self.bucket, Key=full_key))

    def keys(self, under: str = "") -> list[str]:
        listing = _listing_prefix(self.prefix, under)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def keys() -> list[str]:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=listing)
            return sorted(item["Key"][strip:] for page in pages for item in page.get("Contents", []))

        return self._call(f"listing of {listing or 'the bucket'}", keys)

    def _call(self, doing: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except Exception as error:
            translated = self._translate(doing, error)
            if translated is None:
                raise
        # Raised outside the except block so the traceback does not chain the client's exceptions.
        raise _redacted(translated, self._secret)

    def _translate(self, doing: str, error: Exception) -> DestinationError | None:
        from botocore.exceptions import ClientError, HTTPClientError
        from botocore.exceptions import ConnectionError as NoConnectionError

        for cause in _causes(error):
            if isinstance(cause, ClientError):
                details = cause.response.get("Error", {})
                code = str(details.get("Code") or "")
                status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                said = f"{code or status}: {details.get('Message') or 'no message'}"
                if code == "NoSuchBucket":
                    return DestinationError(f"bucket '{self.bucket}' does not exist at {self.host} ({said})")
                if code in S3_REFUSALS or status == 403:
                    return DestinationError(
                        f"{self.host} refused access key '{self.destination.accessKeyId}' for bucket "
                        f"'{self.bucket}' ({said})",
                        refused=True,
                    )
                return DestinationError(f"{doing} in bucket '{self.bucket}' at {self.host} failed ({said})")
            # botocore's ConnectionError: no connection (refused, unresolved, timed out, TLS failed).
            if isinstance(cause, NoConnectionError):
                endpoint = cause.kwargs.get("endpoint_url")
                return _unreachable(_host_port(endpoint) if endpoint else self.host, cause)
            # A connection made, but the answer did not come whole (read timeout, connection closed).
            if isinstance(cause, HTTPClientError):
                return _broken_off(doing, f"bucket '{self.bucket}'", self.host, cause)
        return None


# --- Azure Blob Storage ---------------------------------------------------------------------------------


def azure_account_url(destination: AzureDestination) -> str:
    """Azure's `https://{account}.blob.core.windows.net`, or the endpoint: as is when its host names the
    account (a private endpoint, a sovereign cloud), else with the account as the path (Azurite's style)."""
    if destination.endpoint is None:
        return f"https://{destination.accountName}.blob.core.windows.net"
    endpoint = destination.endpoint.rstrip("/")
    parsed = urlparse(endpoint)
    if (parsed.hostname or "").startswith(f"{destination.accountName}.") or parsed.path.strip("/"):
        return endpoint
    return f"{endpoint}/{destination.accountName}"


class AzureStore:
    """An Azure Blob Storage container (or Azurite's), through azure-storage-blob with the account's shared key."""

    def __init__(self, destination: AzureDestination, secret: str) -> None:
        from azure.storage.blob import BlobServiceClient, LinearRetry

        self.destination = destination
        self.container = destination.container
        self.prefix = destination.prefix
        self._secret = secret
        self.account_url = azure_account_url(destination)
        self.host = _host_port(self.account_url)
        try:
            base64.b64decode(secret, validate=True)
        except binascii.Error:
            # The key could never sign a request: as final as the destination refusing it.
            raise DestinationError(
                f"the account key of '{destination.accountName}' is not base64, as Azure's account keys are",
                refused=True,
            ) from None
        service = BlobServiceClient(
            self.account_url,
            credential={"account_name": destination.accountName, "account_key": secret},
            connection_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            # The SDK's default (ExponentialRetry) waits 15 s, then 45 s, between attempts; this about 1 s.
            retry_policy=LinearRetry(backoff=1, random_jitter_range=1, retry_total=ATTEMPTS - 1),
        )
        self._container = service.get_container_client(self.container)

    def full_key(self, key: str) -> str:
        return _full_key(self.prefix, key)

    def upload(self, key: str, path: Path) -> None:
        full_key = self.full_key(key)

        def upload() -> None:
            # Large files go up as blocks committed at the end: the blob appears only complete.
            with path.open("rb") as file:
                self._container.upload_blob(full_key, file, length=path.stat().st_size, overwrite=True)

        self._call(f"upload of {full_key}", upload)

    def read(self, key: str) -> bytes:
        full_key = self.full_key(key)

        def read() -> bytes:
            content: bytes = self._container.download_blob(full_key).readall()
            return content

        return self._call(f"read of {full_key}", read)

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        full_key = self.full_key(key)

        def delete() -> None:
            try:
                self._container.delete_blob(full_key)
            except ResourceNotFoundError as error:
                if _azure_code(error) != "BlobNotFound":
                    raise

        self._call(f"delete of {full_key}", delete)

    def keys(self, under: str = "") -> list[str]:
        listing = _listing_prefix(self.prefix, under)
        strip = len(self.prefix) + 1 if self.prefix else 0

        def keys() -> list[str]:
            return sorted(name[strip:] for name in self._container.list_blob_names(name_starts_with=listing or None))

        return self._call(f"listing of {listing or 'the container'}", keys)

    def _call(self, doing: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except Exception as error:
            translated = self._translate(doing, error)
            if translated is None:
                raise
        # Raised outside the except block so the traceback does not chain the client's exceptions.
        raise _redacted(translated, self._secret)

    def _translate(self, doing: str, error: Exception) -> DestinationError | None:
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        where = f"container '{self.container}' of account '{self.destination.accountName}'"
        for cause in _causes(error):
            if isinstance(cause, HttpResponseError):
                code = _azure_code(cause)
                said = f"{code or cause.status_code}: {_azure_message(cause)}"
                if code == "ContainerNotFound":
                    return DestinationError(f"{where} does not exist at {self.host} ({said})")
                if code in AZURE_REFUSALS or cause.status_code == 403:
                    return DestinationError(f"{self.host} refused the account key for {where} ({said})", refused=True)
                return DestinationError(f"{doing} in {where} at {self.host} failed ({said})")
            if isinstance(cause, ServiceResponseError):
                return _broken_off(doing, where, self.host, cause)
            if isinstance(cause, ServiceRequestError):
                return _unreachable(self.host, cause)
        return None


def _azure_code(error: Any) -> str:
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _azure_message(error: Any) -> str:
    # The SDK appends RequestId, Time and ErrorCode lines to the server's message; the first line is its words.
    message = str(getattr(error, "message", None) or error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__
