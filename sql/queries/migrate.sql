-- name: migrate_lock_timeout
-- How long migrate_lock may wait (text, in milliseconds), and no other limit
-- on that wait; local to the transaction that takes the lock, so the
-- migrations themselves run under the role's own settings.
SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', '0', true)

-- name: migrate_lock
-- One migrator at a time; concurrent `flowworker migrate` calls queue here.
SELECT pg_advisory_lock(hashtext('flowworker.migrate'))

-- name: migrate_unlock
SELECT pg_advisory_unlock(hashtext('flowworker.migrate'))

-- name: migrate_lock_holder
-- Who holds the migrate lock. Every role sees the pid, user and
-- application_name; the rest only the holder's own role, superusers and
-- members of pg_read_all_stats (`visible`). pid is NULL for a prepared
-- transaction.
SELECT l.pid, a.usename, a.application_name, host(a.client_addr) AS client_addr, a.state,
       a.state_change::timestamptz(0)::text AS state_since,
       round(extract(epoch FROM clock_timestamp() - a.state_change))::bigint AS state_seconds,
       (pg_has_role('pg_read_all_stats', 'USAGE')
        OR pg_has_role(a.usesysid, 'USAGE')) AS visible
FROM pg_catalog.pg_locks AS l
LEFT JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext('flowworker.migrate')::bigint
ORDER BY l.pid
LIMIT 1

-- name: schema_state
SELECT to_regnamespace('flowworker') IS NOT NULL AS has_schema,
       to_regclass('flowworker.migrations') IS NOT NULL AS has_migrations

-- name: schema_version
SELECT coalesce(max(version), 0) AS version FROM flowworker.migrations

-- name: flow_files_applied
-- The compiled flow files applied before (flowworker migrate --dir).
SELECT file_name, checksum, applied_at FROM flowworker.flow_files

-- name: flow_file_record
-- In the transaction that applies the file.
INSERT INTO flowworker.flow_files (file_name, checksum) VALUES (%s, %s)
