-- The export engine's indexes: the expiry sweep's scan, and the dataset exports' filters by run and dataset.

-- delete_expired_exports looks for completed exports past their expiry that still hold a file.
CREATE INDEX batch_exports_expiring_idx ON batch_exports (expires_at)
    WHERE status = 'COMPLETED' AND object_key IS NOT NULL;

CREATE INDEX dataset_run_items_project_run_idx ON dataset_run_items (project_id, dataset_run_id);
CREATE INDEX dataset_items_project_dataset_idx ON dataset_items (project_id, dataset_id);
