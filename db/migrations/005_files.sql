-- Compressed files, a choice of columns, and what a download can be checked against.
ALTER TABLE batch_exports
    ADD COLUMN compression text NOT NULL DEFAULT 'none' CHECK (compression IN ('none', 'gzip', 'zstd')),
    -- The columns chosen, as the user named them (ids or display names), in file order; NULL for every column.
    ADD COLUMN columns     jsonb,
    -- Size in bytes and SHA-256 (hex) of the stored object, computed while it was written.
    ADD COLUMN file_bytes  bigint,
    ADD COLUMN sha256      text;
