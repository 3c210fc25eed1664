-- Scheduled exports: a project's tables, exported on a schedule into the customer's own bucket, one
-- window of ingestion time after another. btree_gist lets Postgres itself refuse overlapping windows.
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE scheduled_exports (
    id                    text PRIMARY KEY,
    project_id            text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    -- The creator: told by email when runs keep failing.
    user_id               text REFERENCES users(id) ON DELETE SET NULL,
    name                  text NOT NULL,
    -- The destination without its secret ({"type": "s3", "bucket": …} or {"type": "azure", …}).
    destination           jsonb NOT NULL,
    -- The secret (S3 secret access key, Azure account key), sealed by workers.secret_box with the
    -- row's id as associated data, so a sealed secret copied onto another row does not open.
    secret                bytea NOT NULL,
    tables                text[] NOT NULL CHECK (cardinality(tables) > 0),
    format                text NOT NULL CHECK (format IN ('CSV', 'JSON', 'JSONL', 'PARQUET')),
    compression           text NOT NULL CHECK (compression IN ('none', 'gzip', 'zstd')),
    columns               jsonb,
    schedule              text NOT NULL CHECK (schedule IN ('every_20_minutes', 'hourly', 'daily', 'weekly')),
    start_mode            text NOT NULL CHECK (start_mode IN ('full_history', 'from_today', 'from_date')),
    start_date            timestamptz,
    enabled               boolean NOT NULL DEFAULT true,
    -- Set when the schedule disabled itself (the destination refused its credentials); cleared on re-enable.
    disabled_reason       text,
    -- When the next run is due; NULL while disabled.
    next_sync_at          timestamptz,
    last_error            text,
    -- The last failure email, so that at most one goes out per cooldown period.
    last_failure_email_at timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((start_mode = 'from_date') = (start_date IS NOT NULL))
);
CREATE INDEX scheduled_exports_project_idx ON scheduled_exports (project_id, created_at);
-- The scheduler's question every minute: which enabled schedules are due.
CREATE INDEX scheduled_exports_due_idx ON scheduled_exports (next_sync_at) WHERE enabled;

CREATE TABLE scheduled_export_runs (
    id                  text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    scheduled_export_id text NOT NULL REFERENCES scheduled_exports(id) ON DELETE CASCADE,
    -- The rows whose ingestion time (created_at) is in [window_start, window_end).
    window_start        timestamptz NOT NULL,
    window_end          timestamptz NOT NULL CHECK (window_end > window_start),
    status              text NOT NULL DEFAULT 'QUEUED' CHECK (status IN ('QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED')),
    tables_total        integer NOT NULL,
    tables_done         integer NOT NULL DEFAULT 0,
    rows_exported       bigint NOT NULL DEFAULT 0,
    -- [{table, key, rows, bytes, sha256}], as the manifest lists them.
    files               jsonb NOT NULL DEFAULT '[]',
    attempts            integer NOT NULL DEFAULT 0,
    error               text,
    started_at          timestamptz,
    finished_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Two schedulers planning the same window at once make one run; no two windows ever overlap.
    UNIQUE (scheduled_export_id, window_start),
    EXCLUDE USING gist (scheduled_export_id WITH =, tstzrange(window_start, window_end) WITH &&)
);
CREATE INDEX scheduled_export_runs_newest_idx ON scheduled_export_runs (scheduled_export_id, window_start DESC);

-- A scheduled run reads one window of ingestion time of a project's rows: by index, not the whole project.
CREATE INDEX traces_project_created_idx ON traces (project_id, created_at);
CREATE INDEX observations_project_created_idx ON observations (project_id, created_at);
CREATE INDEX scores_project_created_idx ON scores (project_id, created_at);
