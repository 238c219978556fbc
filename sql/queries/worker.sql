-- name: flow_shape
-- The steps of a flow as the database knows them, to compare with the code.
SELECT s.step_slug, s.step_type,
       coalesce(array_agg(d.dep_slug ORDER BY d.dep_slug) FILTER (WHERE d.dep_slug IS NOT NULL),
                '{}') AS deps
FROM flowworker.steps s
LEFT JOIN flowworker.deps d ON d.flow_slug = s.flow_slug AND d.step_slug = s.step_slug
WHERE s.flow_slug = $1
GROUP BY s.step_slug, s.step_type

-- name: register_worker
SELECT worker_id FROM flowworker.register_worker($1, $2, $3, $4)

-- name: heartbeat_worker
SELECT flowworker.heartbeat_worker($1)

-- name: stop_worker
SELECT flowworker.stop_worker($1)

-- name: start_tasks
SELECT msg_id, run_id, step_slug, task_index, attempt, input, flow_input, fetch_flow_input,
       timeout, isolated, waited
FROM flowworker.start_tasks($1, $2, $3, $4)

-- name: run_inputs
-- Flow inputs start_tasks left for the worker to fetch (large ones).
SELECT run_id, input, pg_column_size(input) AS size FROM flowworker.runs WHERE run_id = ANY($1)

-- name: ack_tasks
SELECT ord, result, run_status, run_seconds, run_failed_step
FROM flowworker.ack_tasks($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)

-- name: release_tasks
SELECT flowworker.release_tasks($1, $2, $3, $4, $5)

-- name: finished_runs
-- Runs among those in flight here that were cancelled or failed meanwhile
-- (a paused run's running tasks finish: they are not stopped).
SELECT run_id FROM flowworker.runs
WHERE run_id = ANY($1) AND status IN ('completed', 'failed', 'cancelled')

-- name: queue_metrics
SELECT queue_length, visible_length, oldest_msg_age_seconds, paused_length
FROM flowworker.queue_metrics($1)

-- name: flow_paused
-- pause_flow: nothing of the flow is claimed, so --drain does not wait for it.
SELECT paused_at IS NOT NULL FROM flowworker.flows WHERE flow_slug = $1

-- name: schema_present
SELECT to_regclass('flowworker.migrations') IS NOT NULL

-- name: min_worker_version
-- What the newest migration asks of workers (schema version 2 on).
SELECT min_worker_version FROM flowworker.migrations ORDER BY version DESC LIMIT 1

-- name: listen_check
SELECT 1

-- name: max_output_bytes
SELECT value FROM flowworker.config WHERE name = 'max_output_bytes'

-- name: notify
-- A probe: does a NOTIFY from this connection reach the LISTEN connection?
SELECT pg_notify($1, '')

-- name: extend_claims
SELECT flowworker.extend_claims($1, $2, $3, $4, $5, $6, $7)
