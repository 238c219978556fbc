-- Queries of flowworker.dashboard: its actions, each one call of a SQL
-- function of ARCHITECTURE.md §7 by its contract name (what it reads comes
-- from flowworker.ops). The run actions return the run's status after.

-- name: dashboard_functions
-- Which of the action functions this schema has: an older schema shows
-- only the actions it can do.
SELECT DISTINCT p.proname
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'flowworker' AND p.proname = ANY(%(names)s::text[])

-- name: dashboard_cancel_run
SELECT status FROM flowworker.cancel_run(%(run_id)s::uuid)

-- name: dashboard_retry_run
SELECT status FROM flowworker.retry_run(%(run_id)s::uuid)

-- name: dashboard_pause_run
SELECT status FROM flowworker.pause_run(%(run_id)s::uuid)

-- name: dashboard_resume_run
SELECT status FROM flowworker.resume_run(%(run_id)s::uuid)

-- name: dashboard_signal
SELECT flowworker.signal(%(run_id)s::uuid, %(step_slug)s::text, %(payload)s::jsonb)

-- name: dashboard_pause_flow
SELECT flow_slug FROM flowworker.pause_flow(%(flow)s::text)

-- name: dashboard_resume_flow
SELECT flow_slug FROM flowworker.resume_flow(%(flow)s::text)
