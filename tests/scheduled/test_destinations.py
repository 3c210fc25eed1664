"""A scheduled export's destination, through workers.destinations, against moto's S3 (checking credentials)
and Azurite: round trips under the prefix, validation, and each failure in the destination's own words."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.servers import LocalS3, free_port
from schemas.scheduled_exports import AzureDestination, S3Destination, ValidationResult
from tests.support.destinations import PREFIX, Destination, hanging_up_endpoint, unique_name
from workers.destinations import DestinationError, azure_account_url, connect, validate


def said(outcome: ValidationResult | DestinationError, *secrets: str) -> str:
    """The message of a validation or an error, checked to hold none of `secrets`."""
    message = outcome.message
    for secret in secrets:
        assert secret not in message
        if isinstance(outcome, DestinationError):
            assert secret not in str(outcome) and secret not in repr(outcome)
    return message


def no_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        line = record.getMessage()
        assert not any(secret in line for secret in secrets), f"a secret in the log line of {record.name}"


def a_file(folder: Path, content: bytes) -> Path:
    path = folder / f"file-{len(list(folder.iterdir()))}"
    path.write_bytes(content)
    return path


def test_upload_read_keys_and_delete_under_the_prefix(destination: Destination, tmp_path: Path, every_log_line) -> None:
    store = connect(destination.model, destination.secret)

    store.upload("traces/2026-01-01_2026-01-02/part-0.csv", a_file(tmp_path, b"id,name\n1,a\n"))
    store.upload("traces/2026-01-01_2026-01-02/part-1.csv", a_file(tmp_path, b"id,name\n2,b\n"))
    store.upload("manifests/2026-01-01_2026-01-02.json", a_file(tmp_path, b"{}"))

    assert store.full_key("traces/x") == f"{PREFIX}/traces/x"
    assert destination.stored(f"{PREFIX}/traces/2026-01-01_2026-01-02/part-1.csv") == b"id,name\n2,b\n"
    assert store.read("traces/2026-01-01_2026-01-02/part-0.csv") == b"id,name\n1,a\n"
    assert store.keys() == [
        "manifests/2026-01-01_2026-01-02.json",
        "traces/2026-01-01_2026-01-02/part-0.csv",
        "traces/2026-01-01_2026-01-02/part-1.csv",
    ]
    assert store.keys("traces") == [
        "traces/2026-01-01_2026-01-02/part-0.csv",
        "traces/2026-01-01_2026-01-02/part-1.csv",
    ]

    store.delete("traces/2026-01-01_2026-01-02/part-0.csv")
    store.delete("traces/2026-01-01_2026-01-02/part-0.csv")  # already gone: no error
    assert store.keys("traces") == ["traces/2026-01-01_2026-01-02/part-1.csv"]
    no_secret_logged(every_log_line, destination.secret)


def test_an_upload_replaces_the_object(destination: Destination, tmp_path: Path) -> None:
    store = connect(destination.model, destination.secret)
    store.upload("manifests/m.json", a_file(tmp_path, b"first"))
    store.upload("manifests/m.json", a_file(tmp_path, b"second"))
    assert store.read("manifests/m.json") == b"second"


def test_without_a_prefix_keys_are_the_objects_keys(destination: Destination, tmp_path: Path) -> None:
    model = destination.model.model_copy(update={"prefix": ""})
    store = connect(model, destination.secret)
    store.upload("traces/part-0.csv", a_file(tmp_path, b"x"))
    assert store.full_key("traces/part-0.csv") == "traces/part-0.csv"
    assert destination.stored("traces/part-0.csv") == b"x"
    assert store.keys() == ["traces/part-0.csv"]


def test_a_key_that_climbs_out_of_the_prefix_is_refused_before_any_request(destination: Destination) -> None:
    store = connect(destination.model, destination.secret)
    for key in ("../escape", "/absolute", "a//b", ""):
        with pytest.raises(ValueError):
            store.full_key(key)


def test_reading_a_missing_object_says_so(destination: Destination) -> None:
    with pytest.raises(DestinationError) as raised:
        connect(destination.model, destination.secret).read("missing.json")
    assert f"{PREFIX}/missing.json" in said(raised.value, destination.secret)
    assert raised.value.refused is False


def test_validate_writes_reads_back_and_deletes_leaving_nothing(destination: Destination, every_log_line) -> None:
    result = validate(destination.model, destination.secret)

    assert result.ok, result.message
    assert "wrote, read back and deleted" in said(result, destination.secret)
    assert destination.name in result.message
    assert connect(destination.model, destination.secret).keys() == []
    no_secret_logged(every_log_line, destination.secret)


def test_validate_with_a_wrong_secret_is_refused_in_the_servers_words(destination: Destination, every_log_line) -> None:
    result = validate(destination.model, destination.wrong_secret)

    assert not result.ok
    message = said(result, destination.wrong_secret, destination.secret)
    assert "refused" in message
    assert destination.bad_secret_code in message
    no_secret_logged(every_log_line, destination.wrong_secret, destination.secret)


def test_a_wrong_secret_is_a_refusal(destination: Destination, tmp_path: Path) -> None:
    store = connect(destination.model, destination.wrong_secret)
    with pytest.raises(DestinationError) as raised:
        store.upload("traces/part-0.csv", a_file(tmp_path, b"x"))
    assert raised.value.refused is True
    assert destination.bad_secret_code in said(raised.value, destination.wrong_secret, destination.secret)


def test_validate_names_a_missing_bucket_or_container(destination: Destination, every_log_line) -> None:
    missing = unique_name("missing")
    field = "bucket" if isinstance(destination.model, S3Destination) else "container"
    model = destination.model.model_copy(update={field: missing})

    result = validate(model, destination.secret)

    assert not result.ok
    message = said(result, destination.secret)
    assert f"'{missing}'" in message
    assert "does not exist" in message and destination.missing_code in message
    no_secret_logged(every_log_line, destination.secret)


def test_a_missing_bucket_or_container_is_not_a_refusal(destination: Destination, tmp_path: Path) -> None:
    field = "bucket" if isinstance(destination.model, S3Destination) else "container"
    store = connect(destination.model.model_copy(update={field: unique_name("missing")}), destination.secret)
    with pytest.raises(DestinationError) as raised:
        store.upload("traces/part-0.csv", a_file(tmp_path, b"x"))
    assert raised.value.refused is False
    assert destination.missing_code in said(raised.value, destination.secret)


# A bound on a hung client (the clients' own timeouts and retries are what make it fail fast), not a timing check.
@pytest.mark.timeout(120)
def test_validate_says_a_dead_endpoint_refused_the_connection(destination: Destination, every_log_line) -> None:
    closed_port = free_port()  # nothing listens there: the kernel refuses the connection
    model = destination.model.model_copy(update={"endpoint": f"http://127.0.0.1:{closed_port}"})

    result = validate(model, destination.secret)

    assert not result.ok
    message = said(result, destination.secret)
    assert f"127.0.0.1:{closed_port}" in message
    assert "Connection refused" in message
    no_secret_logged(every_log_line, destination.secret)


@pytest.mark.timeout(120)
def test_a_dead_endpoint_is_not_a_refusal(destination: Destination, tmp_path: Path) -> None:
    model = destination.model.model_copy(update={"endpoint": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(DestinationError) as raised:
        connect(model, destination.secret).upload("traces/part-0.csv", a_file(tmp_path, b"x"))
    assert raised.value.refused is False
    assert "cannot reach" in said(raised.value, destination.secret)


@pytest.mark.timeout(120)
def test_an_endpoint_that_hangs_up_without_answering_says_so(destination: Destination) -> None:
    with hanging_up_endpoint() as endpoint:
        result = validate(destination.model.model_copy(update={"endpoint": endpoint}), destination.secret)
    assert not result.ok
    message = said(result, destination.secret)
    assert endpoint.removeprefix("http://") in message and "no complete answer" in message


@pytest.mark.timeout(120)
def test_an_endpoint_whose_name_does_not_resolve_says_so(destination: Destination) -> None:
    # .invalid never resolves (RFC 2606), without asking any outside server.
    model = destination.model.model_copy(update={"endpoint": "http://storage.example.invalid:9000"})
    result = validate(model, destination.secret)
    assert not result.ok
    message = said(result, destination.secret)
    assert "storage.example.invalid:9000" in message and "cannot reach" in message


# --- S3 only: keys revoked, and keys without the permission -----------------------------------------------


def test_a_revoked_s3_key_is_refused(s3: Destination, local_s3: LocalS3, tmp_path: Path) -> None:
    store = connect(s3.model, s3.secret)
    store.upload("traces/part-0.csv", a_file(tmp_path, b"x"))

    assert isinstance(s3.model, S3Destination)
    local_s3.revoke_key(s3.model.accessKeyId)

    with pytest.raises(DestinationError) as raised:
        store.upload("traces/part-1.csv", a_file(tmp_path, b"y"))
    assert raised.value.refused is True
    message = said(raised.value, s3.secret)
    assert "InvalidAccessKeyId" in message and s3.model.accessKeyId in message


def test_an_s3_key_without_write_permission_fails_validation_as_access_denied(
    s3: Destination, local_s3: LocalS3
) -> None:
    access_key_id, secret = local_s3.create_key(actions=("s3:GetObject", "s3:ListBucket"))
    model = s3.model.model_copy(update={"accessKeyId": access_key_id})

    result = validate(model, secret)

    assert not result.ok
    message = said(result, secret)
    assert "refused" in message and "AccessDenied" in message


# --- Azure only -------------------------------------------------------------------------------------------


def test_an_azure_key_that_is_not_base64_is_refused_without_a_request() -> None:
    destination = AzureDestination(type="azure", container="exports", accountName="account1")
    with pytest.raises(DestinationError) as raised:
        connect(destination, "not base64 at all!")
    assert raised.value.refused is True
    assert "not base64" in said(raised.value, "not base64 at all!")
    assert validate(destination, "not base64 at all!").ok is False


def test_the_azure_account_url_follows_the_endpoint() -> None:
    def url(endpoint: str | None) -> str:
        return azure_account_url(AzureDestination(type="azure", container="c-1", accountName="acme", endpoint=endpoint))

    assert url(None) == "https://acme.blob.core.windows.net"
    assert url("https://acme.privatelink.blob.core.windows.net") == "https://acme.privatelink.blob.core.windows.net"
    assert url("http://127.0.0.1:10000") == "http://127.0.0.1:10000/acme"
