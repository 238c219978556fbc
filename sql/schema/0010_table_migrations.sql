CREATE TABLE flowworker.migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    -- The oldest schema version whose workers still run against this one:
    -- a worker starts when the database is at least its own version and
    -- this is at most its version (docs/development.md, "Adding a migration").
    min_worker_version int NOT NULL DEFAULT 1
);
