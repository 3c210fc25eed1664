-- Large exports are written as parts: contiguous ranges of the export's total order, each an RQ job
-- of its own, assembled into one object at the end. The plan is kept here so that a retry after a
-- crash redoes only the parts that are not DONE.
ALTER TABLE batch_exports
    ADD COLUMN parts_total integer NOT NULL DEFAULT 1,
    ADD COLUMN parts_done integer NOT NULL DEFAULT 0,
    -- What every part must agree on, fixed when the export is planned: {"scoreColumns": [...],
    -- "orderType": the SQL type of the ordered-by column, "truncatedAt": the row limit or null}.
    ADD COLUMN plan jsonb;

CREATE TABLE batch_export_parts (
    export_id     text NOT NULL REFERENCES batch_exports(id) ON DELETE CASCADE,
    part          integer NOT NULL CHECK (part >= 0),
    -- The part's first row and the next part's first row in the export's order, as
    -- {"value": <the ordered-by column as text, or null>, "id": <the row's id>}; null: the start or
    -- the end of the export.
    first_row     jsonb,
    next_row      jsonb,
    rows_planned  bigint NOT NULL,
    status        text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'PROCESSING', 'DONE')),
    attempts      integer NOT NULL DEFAULT 0,
    rows_exported bigint NOT NULL DEFAULT 0,
    object_key    text,
    file_bytes    bigint,
    sha256        text,
    -- The last attempt's worker process, for operators (and the tests that watch parts run at once).
    worker        text,
    started_at    timestamptz,
    finished_at   timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (export_id, part)
);
