-- Queries of the application-side client (flowworker.client). They run on
-- the caller's connection, inside the caller's transaction; none commits.
-- Every one returns the columns of flowworker.client.Run, in its order.

-- name: client_start_flow
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at
FROM flowworker.start_flow(%(flow_slug)s::text, %(input)s::jsonb, %(run_id)s::uuid)

-- name: client_start_flows
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at
FROM flowworker.start_flows(%(flow_slug)s::text, %(inputs)s::jsonb[], %(run_ids)s::uuid[])

-- name: client_cancel_run
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at
FROM flowworker.cancel_run(%(run_id)s::uuid)

-- name: client_get_run
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at
FROM flowworker.runs
WHERE run_id = %(run_id)s::uuid
