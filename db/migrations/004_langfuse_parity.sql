-- The data behind the rest of Langfuse's filters and export columns: comments, tool definitions and
-- calls, models with their prices, pricing tiers, experiment and ingestion fields, and the version
-- of a dataset item.

-- Langfuse's comments: free text a user leaves on a trace, an observation or a session.
CREATE TABLE comments (
    id              text NOT NULL,
    project_id      text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    object_type     text NOT NULL CHECK (object_type IN ('TRACE', 'OBSERVATION', 'SESSION', 'PROMPT')),
    object_id       text NOT NULL,
    content         text NOT NULL,
    author_user_id  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, id)
);
CREATE INDEX comments_project_object_idx ON comments (project_id, object_type, object_id);

-- Models and their prices (USD per unit, usually per token), as Langfuse's model definitions.
-- A project's own model overrides the built-in one (project_id NULL) of the same id.
CREATE TABLE models (
    id             text NOT NULL PRIMARY KEY,
    project_id     text REFERENCES projects(id) ON DELETE CASCADE,
    model_name     text NOT NULL,
    match_pattern  text NOT NULL,
    unit           text NOT NULL DEFAULT 'TOKENS',
    input_price    numeric,
    output_price   numeric,
    total_price    numeric,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE observations
    -- name → JSON schema of each tool offered to the model; the calls it made ([{id, name, arguments}]),
    -- and their names, kept apart as Langfuse does so the called-tools filter reads no JSON.
    ADD COLUMN tool_definitions              jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN tool_calls                    jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN tool_call_names               text[] NOT NULL DEFAULT '{}',
    ADD COLUMN usage_pricing_tier_id         text,
    ADD COLUMN usage_pricing_tier_name       text,
    -- Experiments: the dataset run item this observation's trace executed (Langfuse's events).
    ADD COLUMN experiment_dataset_id         text,
    ADD COLUMN experiment_id                 text,
    ADD COLUMN experiment_name               text,
    ADD COLUMN experiment_item_id            text,
    ADD COLUMN experiment_item_root_span_id  text,
    -- Ingestion: who sent it, as OpenTelemetry resource and scope attributes.
    ADD COLUMN service_name                  text,
    ADD COLUMN service_version               text,
    ADD COLUMN scope_name                    text,
    ADD COLUMN scope_version                 text,
    ADD COLUMN telemetry_sdk_language        text,
    ADD COLUMN telemetry_sdk_name            text,
    ADD COLUMN telemetry_sdk_version         text;

-- A dataset item is valid from this time on (Langfuse versions items; a newer version replaces it).
ALTER TABLE dataset_items ADD COLUMN valid_from timestamptz;
UPDATE dataset_items SET valid_from = created_at;
ALTER TABLE dataset_items ALTER COLUMN valid_from SET NOT NULL, ALTER COLUMN valid_from SET DEFAULT now();

-- Concatenates arrays across rows: score categories of every name of a trace into one list.
CREATE AGGREGATE array_cat_agg(anycompatiblearray) (SFUNC = array_cat, STYPE = anycompatiblearray);
