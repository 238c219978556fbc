-- 0004 flow files: `flowworker migrate --dir` records the compiled flow
-- files it applied, with their checksums, and applies each once. Workers of
-- version 2 run against it unchanged (they never read this table).

CREATE TABLE flowworker.flow_files (
    file_name text PRIMARY KEY,
    -- sha256 of the file's text, line endings as \n, in hex.
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Readable like every table (0700); the migrator owns it and alone writes it.
DO $grants$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'flowworker_reader') THEN
        GRANT SELECT ON flowworker.flow_files TO flowworker_reader;
    END IF;
END;
$grants$;

INSERT INTO flowworker.migrations (version, name, min_worker_version) VALUES (4, 'flow_files', 2);
