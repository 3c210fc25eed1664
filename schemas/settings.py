"""The service's configuration: every environment variable DESIGN.md names, read once, with local defaults."""

from __future__ import annotations

import hmac
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The local stack `batch-export demo` starts listens on these ports; the defaults point at it so a
# newcomer needs no configuration at all.
LOCAL_POSTGRES_PORT = 54329
LOCAL_REDIS_PORT = 63799
INSECURE_DEV_SECRET = "dev-only-insecure-secret-change-me"
# 32 bytes as 64 hex digits, like every SECRETS_ENCRYPTION_KEY; public, so refused in production.
INSECURE_DEV_ENCRYPTION_KEY = "0" * 63 + "1"
# The checkout the service runs from. Its `.env` and its local data folder are found from here, never
# from a process's working directory, so the API, workers and cron jobs all read the same ones.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = PROJECT_ROOT / ".env"
LOCAL_DATA_DIR = PROJECT_ROOT / ".data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore")

    DATABASE_URL: str = f"postgresql://postgres@127.0.0.1:{LOCAL_POSTGRES_PORT}/batch_export"
    REDIS_URL: str = f"redis://127.0.0.1:{LOCAL_REDIS_PORT}/0"
    EXPORT_STORAGE_URL: str = "./.data/exports"
    # For S3-compatible servers (MinIO, moto, R2 ...); empty means AWS itself.
    S3_ENDPOINT_URL: str = ""
    PUBLIC_BASE_URL: str = "http://127.0.0.1:8000"
    # "production" refuses the development defaults of secrets; anything else only warns about them.
    ENVIRONMENT: str = "development"
    # Signs download links: whoever knows it can forge a link to any export.
    SECRET_KEY: str = Field(default=INSECURE_DEV_SECRET, min_length=16)
    # The most rows one export writes (a cut export says so); "none" (or empty) for no limit at all.
    BATCH_EXPORT_ROW_LIMIT: int | None = Field(default=1_500_000, gt=0)
    BATCH_EXPORT_DOWNLOAD_LINK_EXPIRATION_HOURS: float = Field(default=24, gt=0)
    BATCH_EXPORT_MAX_ACTIVE_PER_PROJECT: int = Field(default=10, gt=0)
    # An export of more rows than this is written as parts of this many rows, run by any workers at
    # once and assembled into one file; a crashed worker redoes only its part.
    BATCH_EXPORT_PART_ROWS: int = Field(default=1_000_000, gt=0)
    # How many parts of one project's exports run at the same time (RQ's RateLimit), so one project's
    # huge export leaves workers free for the others.
    BATCH_EXPORT_MAX_PARALLEL_PARTS_PER_PROJECT: int = Field(default=4, gt=0)
    # The RQ job's own limits: a hard timeout per attempt, and how many retries a failed attempt gets.
    BATCH_EXPORT_JOB_TIMEOUT_SECONDS: int = Field(default=4 * 3600, gt=0)
    BATCH_EXPORT_JOB_RETRIES: int = Field(default=3, ge=0)
    # The wait before each retry, in seconds ("10,60,300"); the last one repeats for further retries.
    BATCH_EXPORT_JOB_RETRY_DELAYS: Annotated[tuple[int, ...], NoDecode] = (10, 60, 300)
    # A QUEUED export whose job is missing from Redis for this long is re-enqueued by the sweep.
    BATCH_EXPORT_SWEEP_GRACE_SECONDS: int = Field(default=30, ge=0)
    # SIGTERM gives a worker's running job this long to finish; then the job goes back to the queue
    # for another worker (keep it below the supervisor's own kill timeout: Kubernetes waits 30 s).
    WORKER_SHUTDOWN_GRACE_SECONDS: float = Field(default=25, ge=0)
    # SIGTERM gives the API's open requests (and event streams) this long before it closes them.
    API_SHUTDOWN_GRACE_SECONDS: int = Field(default=25, ge=0)
    # Seals the secrets of scheduled exports' destinations (AES-256-GCM): 64 hex digits
    # (`openssl rand -hex 32`). To rotate: put the new key here and the old one in
    # SECRETS_ENCRYPTION_OLD_KEYS, run `batch-export scheduled reseal`, then drop the old key.
    SECRETS_ENCRYPTION_KEY: str = Field(default=INSECURE_DEV_ENCRYPTION_KEY, pattern=r"^[0-9a-fA-F]{64}$")
    # Earlier keys, comma-separated: secrets sealed with them still open, and are resealed with the current one.
    SECRETS_ENCRYPTION_OLD_KEYS: Annotated[tuple[str, ...], NoDecode] = ()
    # A scheduled run exports rows ingested up to this long before it starts, so that rows whose
    # transaction commits a little after their created_at are not missed.
    SCHEDULED_EXPORT_LAG_SECONDS: float = Field(default=300, ge=0)
    # The longest window a run covers: a backfill from the past is many runs of at most this long.
    SCHEDULED_EXPORT_MAX_WINDOW_HOURS: float = Field(default=24, gt=0)
    # How often the scheduler looks for due runs (RQ's CronScheduler), in seconds.
    SCHEDULED_EXPORT_TICK_SECONDS: int = Field(default=60, gt=0)
    # A run that fails every attempt emails the creator at most once per this many hours.
    SCHEDULED_EXPORT_FAILURE_EMAIL_COOLDOWN_HOURS: float = Field(default=24, ge=0)
    SESSION_TTL_HOURS: float = Field(default=24 * 30, gt=0)
    # How long the API may reuse a token's session and project role without asking Postgres; any
    # change to sessions or memberships drops the cache at once (LISTEN/NOTIFY). 0 turns it off.
    SESSION_CACHE_SECONDS: float = Field(default=5, ge=0)
    # Live streams (batchExport.onChange) one user may hold open on one API process: a tab or a
    # terminal following exports is one each.
    SUBSCRIPTION_MAX_STREAMS_PER_USER: int = Field(default=20, ge=1)
    # An idle stream gets a comment this often, so proxies and clients know it is alive.
    SUBSCRIPTION_HEARTBEAT_SECONDS: float = Field(default=15, gt=0)
    # A stream whose client reads nothing (a write waits) for this long is dropped; it resumes with
    # Last-Event-ID when the client reads again, and holds nothing on the server meanwhile.
    SUBSCRIPTION_SEND_TIMEOUT_SECONDS: float = Field(default=60, gt=0)
    # How long the exports' changes are kept for streams that reconnect (Last-Event-ID) to replay; a
    # stream away longer gets the current state of the newest exports instead.
    SUBSCRIPTION_REPLAY_HOURS: float = Field(default=24, gt=0)
    # The port a worker serves GET /metrics on (all interfaces); unset: none. Each worker on a machine needs its own.
    WORKER_METRICS_PORT: int | None = Field(default=None, ge=1, le=65535)
    SMTP_URL: str = ""
    EMAIL_FROM: str = "batch-exports@localhost"
    # Without SMTP_URL, emails are written here as .eml files instead of sent.
    OUTBOX_DIR: Path = LOCAL_DATA_DIR / "outbox"
    # "text": lines for people at a terminal; "json": one JSON object per line, with the request's or
    # export's ids, for a log collector.
    LOG_FORMAT: Literal["text", "json"] = "text"

    @field_validator("BATCH_EXPORT_ROW_LIMIT", mode="before")
    @classmethod
    def _no_row_limit(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "unlimited"):
            return None
        return value

    @field_validator("WORKER_METRICS_PORT", mode="before")
    @classmethod
    def _no_port(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    @field_validator("LOG_FORMAT", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("DATABASE_URL")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        if urlparse(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if urlparse(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis:// URL")
        return value

    @field_validator("EXPORT_STORAGE_URL")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ValueError("s3:// URL needs a bucket: s3://bucket/prefix")
            return value
        if parsed.scheme == "file":
            return value
        if parsed.scheme == "":
            # A bare path: make it absolute now, so the API and the worker agree whatever their cwd.
            return Path(value).expanduser().resolve().as_uri()
        raise ValueError("must be file:///abs/path, a local path, or s3://bucket/prefix")

    @field_validator("OUTBOX_DIR")
    @classmethod
    def _absolute_folder(cls, value: Path) -> Path:
        value = value.expanduser()
        if not value.is_absolute():
            raise ValueError("must be an absolute path (a relative one would depend on each process's working folder)")
        return value

    @field_validator("BATCH_EXPORT_JOB_RETRY_DELAYS", mode="before")
    @classmethod
    def _retry_delays(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                value = tuple(int(part) for part in value.replace(" ", "").split(","))
            except ValueError:
                raise ValueError("must be whole seconds separated by commas, like 10,60,300") from None
        if not isinstance(value, (tuple, list)):
            return value  # pydantic refuses what is not a sequence of integers
        if not value or any(delay < 0 for delay in value):
            raise ValueError("must be at least one delay, none negative")
        return value

    @field_validator("SECRETS_ENCRYPTION_OLD_KEYS", mode="before")
    @classmethod
    def _old_keys(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (tuple, list)) and not all(re.fullmatch(r"[0-9a-fA-F]{64}", k) for k in value):
            raise ValueError("must be keys of 64 hex digits, separated by commas")
        return value

    @model_validator(mode="after")
    def _no_development_secret_in_production(self) -> Settings:
        if self.is_production and self.uses_development_secret:
            raise ValueError(
                "SECRET_KEY is the public development default, refused with ENVIRONMENT=production:"
                " set SECRET_KEY to a long random secret (e.g. `openssl rand -hex 32`)"
            )
        if self.is_production and self.uses_development_encryption_key:
            raise ValueError(
                "SECRETS_ENCRYPTION_KEY is the public development default, refused with ENVIRONMENT=production:"
                " set it to 64 random hex digits (`openssl rand -hex 32`)"
            )
        return self

    @property
    def uses_development_encryption_key(self) -> bool:
        return hmac.compare_digest(self.SECRETS_ENCRYPTION_KEY.lower().encode(), INSECURE_DEV_ENCRYPTION_KEY.encode())

    @property
    def uses_development_secret(self) -> bool:
        # Constant-time, like every comparison of a secret.
        return hmac.compare_digest(self.SECRET_KEY.encode(), INSECURE_DEV_SECRET.encode())

    @property
    def is_production(self) -> bool:
        return self.ENVIRONMENT.strip().lower() == "production"

    def startup_warnings(self) -> list[str]:
        """What an operator must hear when a process starts with settings that are only fit for development."""
        warnings = []
        if self.uses_development_secret:
            warnings.append(
                "WARNING: SECRET_KEY is not set: download links are signed with the public development secret,"
                " so anyone can forge them; set SECRET_KEY (ENVIRONMENT=production refuses to start without it)"
            )
        return warnings

    @field_validator("PUBLIC_BASE_URL")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if urlparse(value).scheme not in ("http", "https"):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")


class SettingsError(Exception):
    """A bad configuration value, phrased as one line an operator can act on."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise SettingsError(f"invalid configuration: {problems}") from None


def _problem(err: Any) -> str:
    message = str(err["msg"]).removeprefix("Value error, ")
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {message}" if where else message


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
