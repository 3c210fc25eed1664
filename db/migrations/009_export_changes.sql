-- batchExport.onChange: every change of an export a client can see (status, progress, file, log),
-- recorded as the export was right then. Each API process LISTENs once on `batch_export_changes`
-- and fans each change out to its open streams; a client that reconnects with Last-Event-ID (a
-- `seq`) replays from this table what it missed while away.
CREATE TABLE batch_export_changes (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    export_id  text NOT NULL REFERENCES batch_exports(id) ON DELETE CASCADE,
    -- The batch_exports row (without its plan), as jsonb_populate_record reads it back.
    export     jsonb NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batch_export_changes_project_idx ON batch_export_changes (project_id, seq);
CREATE INDEX batch_export_changes_export_idx ON batch_export_changes (export_id, seq);
CREATE INDEX batch_export_changes_changed_at_idx ON batch_export_changes (changed_at);

-- The highest seq that pruning (workers.maintenance) has deleted: a client resuming from an id below
-- it may have missed changes, and gets the exports' current state instead of a replay.
CREATE TABLE batch_export_changes_pruned (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    up_to    bigint NOT NULL
);
INSERT INTO batch_export_changes_pruned (up_to) VALUES (0);

-- A resuming client asks for "every change of the project after seq N", so within a project seq
-- order must be commit order: a change numbered 10 that commits after 11 was seen would be missed.
-- The trigger is deferred to the end of the writing transaction, where it takes the project's
-- change lock (held until the commit) before it draws the number. Every lock the transaction needs
-- is already held by then, so this lock cannot close a deadlock, and it is held only for the commit.
CREATE FUNCTION record_batch_export_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(2009, hashtext(NEW.project_id));
    INSERT INTO batch_export_changes (project_id, export_id, export)
    VALUES (NEW.project_id, NEW.id, to_jsonb(NEW) - 'plan')
    RETURNING seq INTO change;
    -- "<seq> <project id>": a listener fetches only the changes of projects someone follows.
    PERFORM pg_notify('batch_export_changes', change || ' ' || NEW.project_id);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER batch_exports_created AFTER INSERT ON batch_exports
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION record_batch_export_change();
-- Only what the API shows: a write that moves nothing but updated_at (a progress tick without new
-- rows) is no change.
CREATE CONSTRAINT TRIGGER batch_exports_changed AFTER UPDATE ON batch_exports
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN ((OLD.name, OLD.status, OLD.rows_exported, OLD.rows_total, OLD.parts_done, OLD.parts_total, OLD.log,
           OLD.object_key, OLD.file_bytes, OLD.sha256, OLD.finished_at, OLD.expires_at)
          IS DISTINCT FROM
          (NEW.name, NEW.status, NEW.rows_exported, NEW.rows_total, NEW.parts_done, NEW.parts_total, NEW.log,
           NEW.object_key, NEW.file_bytes, NEW.sha256, NEW.finished_at, NEW.expires_at))
    EXECUTE FUNCTION record_batch_export_change();

-- `updatedAt` is how a client tells the newer of two states of an export apart (the page merges a
-- list read with the stream's events), so it must move forward in commit order. A write stamped with
-- now(), its transaction's start, would not: a writer that waited for the row's lock while another
-- committed would stamp an older time than the one it overwrites. Such a write gets the moment it
-- writes the row, taken after the row's lock. (A write of any other time is left as it is.)
CREATE FUNCTION stamp_batch_export_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at = now() THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER batch_exports_stamped BEFORE UPDATE ON batch_exports
    FOR EACH ROW EXECUTE FUNCTION stamp_batch_export_write();
