-- The compiled flow files `flowworker migrate --dir` applied, one row each,
-- written in the file's own transaction. A file is applied once: a name
-- found here with the same checksum is skipped, with another checksum
-- refused (an applied file was edited). Without this record every file was
-- applied again on every call, so an older file set options a newer one had
-- changed, until the newer one ran again.
CREATE TABLE flowworker.flow_files (
    file_name text PRIMARY KEY,
    -- sha256 of the file's text, line endings as \n, in hex.
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
