-- Queries of flowworker.ops: what the operator commands (and any other view
-- of the same state) read. psycopg parameters; flowworker.ops runs each
-- with prepare=False, so it is planned with its values: a filter given as
-- NULL drops out, and a status filter can use runs_flow_status_idx (a
-- generic plan could use neither). Times and ages come from the database
-- clock. Statuses are passed through as they are, so statuses added later
-- show without a change here.

-- name: ops_flows
SELECT f.flow_slug, f.max_attempts, f.base_delay, f.timeout, f.created_at,
       (SELECT count(*) FROM flowworker.steps s WHERE s.flow_slug = f.flow_slug) AS steps,
       f.paused_at
FROM flowworker.flows f
ORDER BY f.flow_slug

-- name: ops_queue
-- {queue} is the flow's queue table, q_<slug>, after the slug passed the
-- allow-list. depth: every message (ready, delayed or claimed); visible:
-- ready to be claimed now; the oldest of those has waited since its vt.
SELECT count(*) AS depth,
       count(*) FILTER (WHERE vt <= now()) AS visible,
       extract(epoch FROM now() - min(vt) FILTER (WHERE vt <= now()))::float8
           AS oldest_visible_seconds
FROM flowworker.{queue}

-- name: ops_runs_by_status
-- Every run that is not completed, by flow and status: read from the
-- partial index runs_flow_status_idx, which holds only those.
SELECT r.flow_slug, r.status, count(*) AS runs
FROM flowworker.runs r
WHERE r.status <> 'completed'
GROUP BY r.flow_slug, r.status

-- name: ops_completed_recently
-- Completed runs among those each flow started within the window, counted
-- up to a cap: completed runs are nearly all of the table and have no index
-- of their own, so this reads them (newest first) through
-- runs_flow_started_idx and stops at the cap.
SELECT f.flow_slug, c.runs
FROM flowworker.flows f
CROSS JOIN LATERAL (
    SELECT count(*) AS runs
    FROM (SELECT 1 FROM flowworker.runs r
          WHERE r.flow_slug = f.flow_slug AND r.status = 'completed'
            AND r.started_at >= now() - %(window)s::interval
          ORDER BY r.started_at DESC
          LIMIT %(cap)s) AS x
) AS c
ORDER BY f.flow_slug

-- name: ops_live_workers
SELECT w.flow_slug, count(*) AS workers
FROM flowworker.workers w
WHERE w.stopped_at IS NULL AND w.last_heartbeat_at > now() - %(lost_after)s::interval
GROUP BY w.flow_slug

-- name: ops_now
SELECT now()

-- name: ops_list_runs
-- Newest first, per flow through an index (runs_flow_status_idx for a
-- status other than completed, else runs_flow_started_idx), then merged:
-- each flow gives at most `limit` runs. (started_at, run_id) below
-- `before_started`/`before_run_id` continue a previous page (keyset).
SELECT x.run_id, x.flow_slug, x.status, x.started_at, x.ended_at, x.duration_seconds,
       x.error_message
FROM flowworker.flows f
CROSS JOIN LATERAL (
    SELECT r.run_id, r.flow_slug, r.status, r.started_at,
           greatest(r.completed_at, r.failed_at, r.cancelled_at) AS ended_at,
           extract(epoch FROM coalesce(greatest(r.completed_at, r.failed_at, r.cancelled_at),
                                       now()) - r.started_at)::float8 AS duration_seconds,
           r.error_message
    FROM flowworker.runs r
    WHERE r.flow_slug = f.flow_slug
      AND (%(status)s::text IS NULL OR r.status = %(status)s::text)
      AND (%(started_after)s::timestamptz IS NULL OR r.started_at >= %(started_after)s)
      AND (%(started_before)s::timestamptz IS NULL OR r.started_at < %(started_before)s)
      AND (%(before_started)s::timestamptz IS NULL
           OR (r.started_at, r.run_id) < (%(before_started)s, %(before_run_id)s::uuid))
    ORDER BY r.started_at DESC, r.run_id DESC
    LIMIT %(limit)s
) AS x
WHERE %(flow)s::text IS NULL OR f.flow_slug = %(flow)s::text
ORDER BY x.started_at DESC, x.run_id DESC
LIMIT %(limit)s

-- name: ops_flow_exists
SELECT EXISTS (SELECT 1 FROM flowworker.flows f WHERE f.flow_slug = %(flow)s::text)

-- name: ops_run
SELECT r.run_id, r.flow_slug, r.status, r.started_at,
       greatest(r.completed_at, r.failed_at, r.cancelled_at) AS ended_at,
       extract(epoch FROM coalesce(greatest(r.completed_at, r.failed_at, r.cancelled_at),
                                   now()) - r.started_at)::float8 AS duration_seconds,
       r.error_message, r.input, r.output, r.remaining_steps
FROM flowworker.runs r
WHERE r.run_id = %(run_id)s::uuid

-- name: ops_run_steps
-- Each step of the run's flow in definition order, with its state and its
-- tasks counted: attempts summed, the newest error of any attempt. A step
-- still started is timed up to now.
SELECT s.step_slug, s.step_type, ss.status, ss.started_at,
       coalesce(ss.completed_at, ss.failed_at) AS ended_at,
       extract(epoch FROM coalesce(ss.completed_at, ss.failed_at,
                                   CASE WHEN ss.status = 'started' THEN now() END)
                          - ss.started_at)::float8 AS duration_seconds,
       coalesce(ss.error_message, t.last_error) AS last_error,
       coalesce(t.total, 0) AS total, coalesce(t.queued, 0) AS queued,
       coalesce(t.started, 0) AS started, coalesce(t.completed, 0) AS completed,
       coalesce(t.failed, 0) AS failed, coalesce(t.cancelled, 0) AS cancelled,
       coalesce(t.attempts, 0) AS attempts
FROM flowworker.runs r
JOIN flowworker.steps s ON s.flow_slug = r.flow_slug
LEFT JOIN flowworker.step_states ss ON ss.run_id = r.run_id AND ss.step_slug = s.step_slug
LEFT JOIN LATERAL (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE k.status = 'queued') AS queued,
           count(*) FILTER (WHERE k.status = 'started') AS started,
           count(*) FILTER (WHERE k.status = 'completed') AS completed,
           count(*) FILTER (WHERE k.status = 'failed') AS failed,
           count(*) FILTER (WHERE k.status = 'cancelled') AS cancelled,
           sum(k.attempts_count) AS attempts,
           (array_agg(k.error_message ORDER BY coalesce(k.failed_at, k.started_at) DESC)
                FILTER (WHERE k.error_message IS NOT NULL))[1] AS last_error
    FROM flowworker.step_tasks k
    WHERE k.run_id = r.run_id AND k.step_slug = s.step_slug
) AS t ON true
WHERE r.run_id = %(run_id)s::uuid
ORDER BY s.step_index

-- name: ops_run_events
-- The run's newest events (events_run_idx), oldest of them first.
SELECT e.event_id, e.at, e.event, e.step_slug, e.task_index, e.attempt, e.detail, e.actor
FROM (SELECT * FROM flowworker.events x
      WHERE x.run_id = %(run_id)s::uuid
      ORDER BY x.event_id DESC
      LIMIT %(limit)s::int) AS e
ORDER BY e.event_id

-- name: ops_flow_edges
SELECT d.dep_slug, d.step_slug
FROM flowworker.deps d
WHERE d.flow_slug = %(flow)s::text
ORDER BY d.dep_slug, d.step_slug

-- name: ops_workers
-- Live workers first, then the rest by their last heartbeat. A worker not
-- stopped whose heartbeat is older than lost_after is `lost` (killed, or
-- cut off from the database).
SELECT w.worker_id, w.flow_slug, w.hostname, w.pid, w.started_at, w.last_heartbeat_at,
       w.stopped_at,
       CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
            WHEN w.last_heartbeat_at > now() - %(lost_after)s::interval THEN 'live'
            ELSE 'lost' END AS state,
       extract(epoch FROM now() - w.last_heartbeat_at)::float8 AS heartbeat_age_seconds
FROM flowworker.workers w
ORDER BY (w.stopped_at IS NULL) DESC, w.last_heartbeat_at DESC, w.worker_id
LIMIT %(limit)s

-- name: ops_prune_preview
-- What prune(older_than) would delete now: the runs by status, and the
-- workers. The same conditions as flowworker.prune.
SELECT now() - %(older_than)s::interval AS cutoff,
       coalesce((SELECT jsonb_object_agg(c.status, c.runs)
                 FROM (SELECT r.status, count(*) AS runs
                       FROM flowworker.runs r
                       WHERE r.started_at < now() - %(older_than)s::interval
                         AND r.status IN ('completed', 'failed', 'cancelled')
                         AND greatest(r.completed_at, r.failed_at, r.cancelled_at)
                             < now() - %(older_than)s::interval
                       GROUP BY r.status) AS c), '{}') AS runs,
       (SELECT count(*) FROM flowworker.workers w
        WHERE coalesce(w.stopped_at, w.last_heartbeat_at) < now() - %(older_than)s::interval)
           AS workers

-- name: ops_prune
SELECT flowworker.prune(%(older_than)s::interval, %(batch_size)s::int)

-- name: ops_run_tasks
-- Each task of the run: its attempts so far and the error of the last
-- failed one (each failed attempt's own error is in its task.failed event).
-- In step definition order, then by index.
SELECT k.step_slug, k.task_index, k.status, k.attempts_count AS attempts, k.error_message,
       k.started_at, coalesce(k.completed_at, k.failed_at) AS ended_at, k.worker_id
FROM flowworker.step_tasks k
JOIN flowworker.steps s ON s.flow_slug = k.flow_slug AND s.step_slug = k.step_slug
WHERE k.run_id = %(run_id)s::uuid
ORDER BY s.step_index, k.task_index
LIMIT %(limit)s
