"""Local Postgres and Redis servers for the demo and the test suite, started from the machine's binaries;
and, for scheduled exports' destinations, S3 (moto, checking credentials) and Azure Blob Storage (Azurite).

Postgres refuses to run as root, so when we are root the server runs as the `postgres` system user
on a data folder it owns.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql


class LocalServiceError(RuntimeError):
    """A local server could not be installed, started or reached; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise LocalServiceError(f"`{name}` not found: install PostgreSQL (apt-get install postgresql)")


def _as_postgres_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside the network namespace `netns` (`ip netns exec`, which execs it: same pid), or as is."""
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def postgres_can_reach(folder: Path) -> bool:
    """Whether Postgres's system user can enter `folder` (or, if it does not exist yet, its
    nearest existing parent). Running as root, a clone under a private folder such as /root or a
    mktemp directory is out of its reach, and initdb there fails."""
    if os.geteuid() != 0:
        return True
    existing = folder
    while not existing.exists():
        existing = existing.parent
    return subprocess.run(_as_postgres_user(["test", "-x", str(existing)]), capture_output=True).returncode == 0


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    database: str = "batch_export"
    # Tests trade durability for speed; the demo keeps Postgres's defaults.
    fast_unsafe: bool = False
    # The address it listens on, and the network namespace it runs in (devstack.cluster's data host).
    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> list[str]:
        return in_netns(self.netns, _as_postgres_user([_find_binary("pg_ctl"), "-D", str(self.data_dir), *args]))

    def initialize(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        result = subprocess.run(
            _as_postgres_user(
                [
                    _find_binary("initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    # Byte-order collation: text keys compare without the locale library, which makes
                    # bulk loads and id ordering faster; character classes stay UTF-8 aware for ILIKE.
                    "--lc-collate=C",
                ]
            ),
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise LocalServiceError(f"initdb failed in {self.data_dir}: {result.stderr.strip()[-500:]}")

    def start(self) -> None:
        self.initialize()
        if not self.is_running():
            # Room for bulk loads (the seed, big exports) beyond Postgres's tiny defaults.
            options = (
                f"-p {self.port} -h {self.host} -k {self.data_dir}"
                " -c shared_buffers=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min"
                " -c maintenance_work_mem=256MB -c work_mem=64MB"
            )
            if self.fast_unsafe:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            result = subprocess.run(
                self._pg_ctl("-l", str(self.data_dir / "server.log"), "-o", options, "-w", "-t", "60", "start"),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                log = (
                    (self.data_dir / "server.log").read_text(errors="replace")[-1000:]
                    if (self.data_dir / "server.log").exists()
                    else ""
                )
                raise LocalServiceError(f"Postgres did not start on port {self.port}: {result.stderr.strip()} {log}")
        self._create_database()

    def is_running(self) -> bool:
        result = subprocess.run(self._pg_ctl("status"), capture_output=True)
        return result.returncode == 0

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(self.database)))

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "PG_VERSION").exists() and self.is_running():
            subprocess.run(self._pg_ctl("-m", mode, "-w", "stop"), capture_output=True)


@dataclass
class LocalRedis:
    data_dir: Path
    port: int
    process: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    netns: str | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, *, detach: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LocalServiceError("`redis-server` not found: install it (apt-get install redis-server)")
        if port_open(self.port, self.host):
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            # Bound to one address of our choosing: protected mode would refuse every other host's clients.
            "--protected-mode",
            "yes" if self.host.startswith("127.") else "no",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.data_dir / "redis.log"),
        ]
        if detach:
            argv += ["--daemonize", "yes", "--pidfile", str(self.data_dir / "redis.pid")]
            subprocess.run(in_netns(self.netns, argv), check=True)
        else:
            self.process = subprocess.Popen(
                in_netns(self.netns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        deadline = time.monotonic() + 15
        while not port_open(self.port, self.host):
            if self.process is not None and self.process.poll() is not None:
                self.process = None
                raise LocalServiceError(
                    f"Redis exited at start on port {self.port} (is the port taken?); see {self.data_dir / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                raise LocalServiceError(f"Redis did not start on port {self.port}; see {self.data_dir / 'redis.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
            return
        pidfile = self.data_dir / "redis.pid"
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
            deadline = time.monotonic() + 10
            while port_open(self.port, self.host) and time.monotonic() < deadline:
                time.sleep(0.05)


def _wait_for_port(process: subprocess.Popen, port: int, host: str, name: str, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not port_open(port, host):
        if process.poll() is not None:
            raise LocalServiceError(f"{name} exited at start on port {port} (is the port taken?); see {log}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=10)
            raise LocalServiceError(f"{name} did not start on port {port} within {seconds:.0f} s; see {log}")
        time.sleep(0.05)


def _stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


# --- S3 that checks credentials ---------------------------------------------------------------------

# Every action on S3 (a key made by create_key may do these and nothing else, unless told otherwise).
S3_ALL_ACTIONS = ("s3:*",)


@dataclass
class LocalS3:
    """moto's S3 and IAM in a process of its own, checking every request's signature against IAM's keys.

    moto checks credentials once its `INITIAL_NO_AUTH_ACTION_COUNT` requests are spent (infinite by
    default). The server starts with the default, creates an administrator's key, then sets the count
    to 0 through `/moto-api/reset-auth`: from then on an unknown key is InvalidAccessKeyId, a wrong
    secret SignatureDoesNotMatch, and an action outside a user's policy AccessDenied, as on AWS. Its
    own process keeps that setting (and its buckets) away from the in-process moto other tests use.
    """

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    region: str = "us-east-1"
    process: subprocess.Popen | None = None
    _admin_key: tuple[str, str] | None = None
    _users: dict[str, str] = field(default_factory=dict)  # access key id -> the IAM user it belongs to

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "moto.log"
        environment = {**os.environ, "MOTO_PORT": str(self.port)}
        environment.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        try:
            _wait_for_port(self.process, self.port, self.host, "moto", log, seconds=30)
            self._admin_key = self._create_key_unchecked("administrator", ("*",))
            self._moto_api("reset-auth", b"0")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)
            self.process = None

    def _moto_api(self, action: str, body: bytes) -> Any:
        # Not form-encoded (urllib's default), or werkzeug parses the body away from moto's `request.data`.
        request = urllib.request.Request(
            f"{self.url}/moto-api/{action}", data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def client(self, service: str, key: tuple[str, str] | None = None) -> Any:
        """A boto3 client of this server, signed with `key` (the administrator's by default)."""
        import boto3

        access_key_id, secret = key or self._admin_key or ("bootstrap", "bootstrap")
        return boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret,
        )

    def _create_key_unchecked(self, user: str, actions: tuple[str, ...]) -> tuple[str, str]:
        iam = self.client("iam")
        iam.create_user(UserName=user)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="allowed", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._users[key["AccessKeyId"]] = user
        return key["AccessKeyId"], key["SecretAccessKey"]

    def create_key(self, actions: tuple[str, ...] = S3_ALL_ACTIONS) -> tuple[str, str]:
        """A new IAM user allowed `actions` on every resource, and its access key: (access key id, secret)."""
        return self._create_key_unchecked(f"user-{uuid.uuid4().hex[:12]}", actions)

    def revoke_key(self, access_key_id: str) -> None:
        """Deletes the access key: the next request signed with it is InvalidAccessKeyId."""
        self.client("iam").delete_access_key(UserName=self._users.pop(access_key_id), AccessKeyId=access_key_id)

    def create_bucket(self, name: str) -> None:
        self.client("s3").create_bucket(Bucket=name)

    def object(self, bucket: str, key: str) -> bytes:
        """An object as the server holds it, read with the administrator's key."""
        body: bytes = self.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


# --- Azure Blob Storage: Azurite ----------------------------------------------------------------------

# Microsoft's emulator, from npm, installed on first use into the repository's .tools/ folder.
AZURITE_PACKAGE = "azurite@3"
TOOLS_DIR = Path(__file__).resolve().parents[1] / ".tools"


def azurite_blob_binary(tools_dir: Path = TOOLS_DIR) -> Path:
    """Azurite's blob server, installed with npm into `tools_dir` the first time (one install at a time)."""
    binary = tools_dir / "node_modules" / ".bin" / "azurite-blob"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise LocalServiceError("`npm` not found: install Node.js and npm (make system-deps)")
    tools_dir.mkdir(parents=True, exist_ok=True)
    with (tools_dir / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():  # installed by whoever held the lock before us
            return binary
        try:
            result = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--prefix", str(tools_dir), AZURITE_PACKAGE],
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            raise LocalServiceError(
                f"`npm install {AZURITE_PACKAGE}` took over 10 minutes; is the registry reachable?"
            ) from None
        if result.returncode != 0 or not binary.exists():
            raise LocalServiceError(f"`npm install {AZURITE_PACKAGE}` failed: {result.stderr.strip()[-1000:]}")
    return binary


@dataclass
class LocalAzurite:
    """Azurite's blob service on loopback, keeping its blobs in `data_dir`, for Azure's well-known dev account."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    process: subprocess.Popen | None = None

    # Azurite's built-in account and its key, published in Microsoft's documentation of the emulator.
    ACCOUNT_NAME = "devstoreaccount1"
    ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    @property
    def endpoint(self) -> str:
        """The server, as an AzureDestination's `endpoint` names it (the account comes as the path)."""
        return f"http://{self.host}:{self.port}"

    @property
    def account_url(self) -> str:
        return f"{self.endpoint}/{self.ACCOUNT_NAME}"

    def start(self) -> None:
        binary = azurite_blob_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "azurite.log"
        argv = [
            str(binary),
            "--blobHost",
            self.host,
            "--blobPort",
            str(self.port),
            "--location",
            str(self.data_dir),
            # The SDK may speak a newer API version than this Azurite knows; the blob calls we make are old.
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
        ]
        with log.open("ab") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, cwd=self.data_dir)
        try:
            _wait_for_port(self.process, self.port, self.host, "Azurite", log, seconds=60)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)
            self.process = None

    def service(self) -> Any:
        """A BlobServiceClient of this server, with the account's key."""
        from azure.storage.blob import BlobServiceClient

        credential = {"account_name": self.ACCOUNT_NAME, "account_key": self.ACCOUNT_KEY}
        return BlobServiceClient(self.account_url, credential=credential)

    def create_container(self, name: str) -> None:
        self.service().create_container(name)

    def blob(self, container: str, name: str) -> bytes:
        """A blob as the server holds it."""
        content: bytes = self.service().get_blob_client(container, name).download_blob().readall()
        return content
