-- name: migrate_lock
-- One migrator at a time; concurrent `flowworker migrate` calls queue here.
SELECT pg_advisory_lock(hashtext('flowworker.migrate'))

-- name: migrate_unlock
SELECT pg_advisory_unlock(hashtext('flowworker.migrate'))

-- name: schema_state
SELECT to_regnamespace('flowworker') IS NOT NULL AS has_schema,
       to_regclass('flowworker.migrations') IS NOT NULL AS has_migrations

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM flowworker.migrations
