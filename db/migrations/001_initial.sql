-- Identity, access, batch exports, the audit log, and the exportable observability tables.

CREATE TABLE users (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    email       text NOT NULL UNIQUE,
    name        text,
    image       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens. Only a SHA-256 of the token is stored; the token itself is shown once.
CREATE TABLE auth_sessions (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    user_id     text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX auth_sessions_user_id_idx ON auth_sessions (user_id);

CREATE TABLE organizations (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    org_id      text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_org_id_idx ON projects (org_id);

CREATE TABLE organization_memberships (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    org_id      text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER', 'NONE')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, user_id)
);
CREATE INDEX organization_memberships_user_id_idx ON organization_memberships (user_id);

-- A project role overrides the organization role for that one project.
CREATE TABLE project_memberships (
    project_id  text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id     text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER', 'NONE')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_memberships_user_id_idx ON project_memberships (user_id);

CREATE TABLE batch_exports (
    id             text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    project_id     text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id        text REFERENCES users(id) ON DELETE SET NULL,
    name           text NOT NULL,
    status         text NOT NULL DEFAULT 'QUEUED'
                   CHECK (status IN ('QUEUED', 'PROCESSING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    format         text NOT NULL CHECK (format IN ('CSV', 'JSON', 'JSONL')),
    query          jsonb NOT NULL,
    object_key     text,
    log            text,
    rows_exported  bigint NOT NULL DEFAULT 0,
    rows_total     bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    expires_at     timestamptz
);
CREATE INDEX batch_exports_project_created_idx ON batch_exports (project_id, created_at DESC, id DESC);
-- The sweep looks for exports that never got a job; keep that scan cheap.
CREATE INDEX batch_exports_active_idx ON batch_exports (status, created_at)
    WHERE status IN ('QUEUED', 'PROCESSING');

CREATE TABLE audit_logs (
    id                 text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    type               text NOT NULL DEFAULT 'USER' CHECK (type IN ('USER', 'API_KEY')),
    api_key_id         text,
    user_id            text,
    org_id             text NOT NULL,
    user_org_role      text,
    project_id         text,
    user_project_role  text,
    resource_type      text NOT NULL,
    resource_id        text NOT NULL,
    action             text NOT NULL,
    before             jsonb,
    after              jsonb
);
CREATE INDEX audit_logs_project_created_idx ON audit_logs (project_id, created_at);
CREATE INDEX audit_logs_resource_idx ON audit_logs (project_id, resource_type, resource_id);

-- Exportable observability data, with Langfuse's entity fields. Every table has created_at: the
-- export's consistent cut-off is "rows created no later than the export itself".

CREATE TABLE traces (
    id           text NOT NULL,
    project_id   text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    timestamp    timestamptz NOT NULL,
    name         text,
    user_id      text,
    session_id   text,
    release      text,
    version      text,
    environment  text NOT NULL DEFAULT 'default',
    tags         text[] NOT NULL DEFAULT '{}',
    bookmarked   boolean NOT NULL DEFAULT false,
    public       boolean NOT NULL DEFAULT false,
    input        jsonb,
    output       jsonb,
    metadata     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);
CREATE INDEX traces_project_timestamp_idx ON traces (project_id, timestamp);
CREATE INDEX traces_project_session_idx ON traces (project_id, session_id);

CREATE TABLE observations (
    id                      text NOT NULL,
    project_id              text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    trace_id                text,
    parent_observation_id   text,
    type                    text NOT NULL DEFAULT 'SPAN',
    start_time              timestamptz NOT NULL,
    end_time                timestamptz,
    name                    text,
    metadata                jsonb,
    level                   text NOT NULL DEFAULT 'DEFAULT'
                            CHECK (level IN ('DEBUG', 'DEFAULT', 'WARNING', 'ERROR')),
    status_message          text,
    version                 text,
    input                   jsonb,
    output                  jsonb,
    model                   text,
    internal_model_id       text,
    model_parameters        jsonb,
    completion_start_time   timestamptz,
    prompt_id               text,
    prompt_name             text,
    prompt_version          integer,
    provided_usage_details  jsonb NOT NULL DEFAULT '{}',
    usage_details           jsonb NOT NULL DEFAULT '{}',
    provided_cost_details   jsonb NOT NULL DEFAULT '{}',
    cost_details            jsonb NOT NULL DEFAULT '{}',
    total_cost              numeric,
    environment             text NOT NULL DEFAULT 'default',
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);
CREATE INDEX observations_project_start_time_idx ON observations (project_id, start_time);
CREATE INDEX observations_project_trace_idx ON observations (project_id, trace_id);

CREATE TABLE scores (
    id              text NOT NULL,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    trace_id        text,
    session_id      text,
    dataset_run_id  text,
    observation_id  text,
    timestamp       timestamptz NOT NULL,
    name            text NOT NULL,
    value           double precision,
    string_value    text,
    source          text NOT NULL CHECK (source IN ('API', 'EVAL', 'ANNOTATION')),
    data_type       text NOT NULL CHECK (data_type IN ('NUMERIC', 'BOOLEAN', 'CATEGORICAL', 'TEXT')),
    comment         text,
    metadata        jsonb,
    author_user_id  text,
    config_id       text,
    queue_id        text,
    environment     text NOT NULL DEFAULT 'default',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);
CREATE INDEX scores_project_timestamp_idx ON scores (project_id, timestamp);
CREATE INDEX scores_project_trace_idx ON scores (project_id, trace_id);

CREATE TABLE trace_sessions (
    id           text NOT NULL,
    project_id   text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    bookmarked   boolean NOT NULL DEFAULT false,
    public       boolean NOT NULL DEFAULT false,
    environment  text NOT NULL DEFAULT 'default',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);
CREATE INDEX trace_sessions_project_created_idx ON trace_sessions (project_id, created_at);

CREATE TABLE datasets (
    id           text NOT NULL,
    project_id   text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text,
    metadata     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id),
    UNIQUE (project_id, name)
);
CREATE INDEX datasets_project_created_idx ON datasets (project_id, created_at);

CREATE TABLE dataset_items (
    id                     text NOT NULL,
    project_id             text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    dataset_id             text NOT NULL,
    status                 text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'ARCHIVED')),
    input                  jsonb,
    expected_output        jsonb,
    metadata               jsonb,
    source_trace_id        text,
    source_observation_id  text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, dataset_id) REFERENCES datasets (project_id, id) ON DELETE CASCADE
);
CREATE INDEX dataset_items_project_created_idx ON dataset_items (project_id, created_at);

CREATE TABLE dataset_runs (
    id           text NOT NULL,
    project_id   text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    dataset_id   text NOT NULL,
    name         text NOT NULL,
    description  text,
    metadata     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id),
    UNIQUE (project_id, dataset_id, name),
    FOREIGN KEY (project_id, dataset_id) REFERENCES datasets (project_id, id) ON DELETE CASCADE
);
CREATE INDEX dataset_runs_project_created_idx ON dataset_runs (project_id, created_at);

CREATE TABLE dataset_run_items (
    id               text NOT NULL,
    project_id       text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    dataset_run_id   text NOT NULL,
    dataset_item_id  text NOT NULL,
    trace_id         text NOT NULL,
    observation_id   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id),
    FOREIGN KEY (project_id, dataset_run_id) REFERENCES dataset_runs (project_id, id) ON DELETE CASCADE
);
CREATE INDEX dataset_run_items_project_created_idx ON dataset_run_items (project_id, created_at);
