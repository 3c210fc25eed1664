-- Parquet files: a fourth format, whose `compression` is the codec of its columns.
ALTER TABLE batch_exports
    DROP CONSTRAINT batch_exports_format_check,
    ADD CONSTRAINT batch_exports_format_check CHECK (format IN ('CSV', 'JSON', 'JSONL', 'PARQUET'));
