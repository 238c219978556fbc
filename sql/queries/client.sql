-- Queries of the application-side client (flowworker.client). They run on
-- the caller's connection, inside the caller's transaction; none commits.
-- Every one returns the columns of flowworker.client.Run, in its order.

-- name: client_start_flow
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.start_flow(%(flow_slug)s::text, %(input)s::jsonb, %(run_id)s::uuid)

-- name: client_start_flows
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.start_flows(%(flow_slug)s::text, %(inputs)s::jsonb[], %(run_ids)s::uuid[])

-- name: client_cancel_run
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.cancel_run(%(run_id)s::uuid, %(reason)s::text)

-- name: client_get_run
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.runs
WHERE run_id = %(run_id)s::uuid

-- name: client_retry_run
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.retry_run(%(run_id)s::uuid)

-- name: client_pause_run
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.pause_run(%(run_id)s::uuid)

-- name: client_resume_run
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.resume_run(%(run_id)s::uuid)

-- name: client_list_runs
-- Newest first, by (flow_slug, started_at) when the flow is given.
SELECT run_id, flow_slug, status, input, output, error_message,
       started_at, completed_at, failed_at, cancelled_at, paused_at, cancel_reason
FROM flowworker.runs
WHERE (%(flow_slug)s::text IS NULL OR flow_slug = %(flow_slug)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(before)s::timestamptz IS NULL OR started_at < %(before)s::timestamptz)
ORDER BY started_at DESC
LIMIT %(limit)s::int

-- name: client_pause_flow
SELECT flow_slug FROM flowworker.pause_flow(%(flow_slug)s::text)

-- name: client_resume_flow
SELECT flow_slug FROM flowworker.resume_flow(%(flow_slug)s::text)

-- name: client_signal
SELECT flowworker.signal(%(run_id)s::uuid, %(step_slug)s::text, %(payload)s::jsonb)

-- name: client_signal_token
SELECT flowworker.signal_token(%(token)s::uuid, %(payload)s::jsonb)
