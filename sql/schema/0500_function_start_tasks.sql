-- Claim up to batch_size visible tasks of a flow for a worker.
--
-- Each claim counts an attempt; the attempt number is the claim token that
-- complete_task and fail_task check. A message whose claim expired (its
-- worker died) is visible again and is re-claimed here with attempt + 1, or
-- fails its task and run once max_attempts claims were spent. Messages that
-- point at nothing claimable are archived, so garbage never loops.
-- The claim stays hidden for the task timeout + grace_seconds (1 s to an hour).
--
-- Per task it returns the handler input: a map task's own element, a root
-- step's flow input, a dependent step's {dep: output}. The flow input comes
-- along only when the handler input is not it already and it is small
-- (8 KiB); otherwise fetch_flow_input tells the worker to read it from the
-- run (once per run: a map over a large input must not send it with every
-- element). `waited` is how long, in seconds, the task was visible before
-- this claim (the queue-wait metric).
CREATE FUNCTION flowworker.start_tasks(
    flow_slug text, worker_id uuid, batch_size int DEFAULT 10, grace_seconds int DEFAULT 5
)
RETURNS TABLE (
    msg_id bigint, run_id uuid, step_slug text, task_index int, attempt int,
    input jsonb, flow_input jsonb, fetch_flow_input boolean, timeout int, isolated boolean,
    waited double precision
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: one generic plan, rows by key only (see "Plans" in 0000_schema.sql).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET random_page_cost = 1.1
AS $$
#variable_conflict use_column
DECLARE
    q pg_catalog.text := 'q_' || flowworker.check_slug(start_tasks.flow_slug, 'flow slug');
    v_msg_ids bigint[];
    v_ptrs pg_catalog.jsonb[];
    v_msg_tids pg_catalog.tid[];
    v_vts pg_catalog.timestamptz[];
    v_locked flowworker.task_claim[];
    v_orphans bigint[];
    v_exhausted flowworker.task_claim;
    v_lost boolean := false;
    v_waits boolean;
BEGIN
    -- ---------- GUARD: sane claim sizes and spans ----------
    -- A negative grace would make a claim visible again at once, and spend
    -- the task's attempts on every call.
    IF grace_seconds IS NULL OR grace_seconds NOT BETWEEN 1 AND 3600
       OR batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'start_tasks: grace_seconds must be 1..3600 and batch_size 1..10000, not % and %',
            grace_seconds, batch_size USING ERRCODE = '22023';
    END IF;

    -- ---------- GUARD: a paused flow is not claimed (pause_flow) ----------
    IF EXISTS (SELECT 1 FROM flowworker.flows f
               WHERE f.flow_slug = start_tasks.flow_slug AND f.paused_at IS NOT NULL) THEN
        RETURN;
    END IF;

    -- ---------- Visible messages, locked ----------
    EXECUTE format(
        'SELECT array_agg(m.msg_id), array_agg(m.message), array_agg(m.ctid), array_agg(m.vt)
         FROM (SELECT msg_id, message, ctid, vt FROM flowworker.%I
               WHERE vt <= now() ORDER BY vt, msg_id LIMIT $1
               FOR UPDATE SKIP LOCKED) m', q)
        INTO v_msg_ids, v_ptrs, v_msg_tids, v_vts USING batch_size;
    IF v_msg_ids IS NULL THEN
        RETURN;
    END IF;

    -- Lock the unfinished tasks these messages point at; skip any being
    -- written right now. Each task is looked up from its message (LATERAL),
    -- whatever the planner thinks of the table's size: a plan cached while
    -- the flow had few tasks must not scan them all once it has many.
    SELECT array_agg(l), bool_or(l.is_wait) INTO v_locked, v_waits
    FROM (
        SELECT t.run_id, t.step_slug, t.task_index, m.msg_id, t.status, t.attempts_count,
               -- the last attempt number allowed: attempts go on after a retry
               coalesce(s.max_attempts, f.max_attempts) + t.attempts_base,
               coalesce(s.timeout, f.timeout),
               t.tid, m.tid, s.step_type = 'wait'
        FROM unnest(v_msg_ids, v_ptrs, v_msg_tids) AS m(msg_id, ptr, tid)
        CROSS JOIN LATERAL (
            SELECT t.run_id, t.step_slug, t.task_index, t.status, t.attempts_count,
                   t.attempts_base, t.ctid AS tid
            FROM flowworker.step_tasks t
            WHERE t.flow_slug = start_tasks.flow_slug AND t.message_id = m.msg_id
              AND t.status IN ('queued', 'started')
              AND jsonb_typeof(m.ptr) = 'object'
              AND t.run_id::pg_catalog.text = m.ptr ->> 'run_id'
              AND t.step_slug = m.ptr ->> 'step_slug'
              AND t.task_index::pg_catalog.text = m.ptr ->> 'task_index'
            FOR UPDATE SKIP LOCKED
        ) AS t
        JOIN flowworker.steps s ON s.flow_slug = start_tasks.flow_slug AND s.step_slug = t.step_slug
        JOIN flowworker.flows f ON f.flow_slug = start_tasks.flow_slug
    ) AS l(run_id, step_slug, task_index, msg_id, status, attempts_count, max_attempts, timeout,
           task_tid, msg_tid, is_wait);

    -- Messages with no unfinished task behind them are garbage or duplicates
    -- (only a message whose task was not locked above can be one).
    IF coalesce(cardinality(v_locked), 0) < cardinality(v_msg_ids) THEN
        SELECT array_agg(m.msg_id) INTO v_orphans
        FROM unnest(v_msg_ids, v_ptrs) AS m(msg_id, ptr)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(v_locked) c WHERE c.msg_id = m.msg_id)
          AND NOT EXISTS (
            SELECT 1 FROM flowworker.step_tasks t
            WHERE t.message_id = m.msg_id AND t.flow_slug = start_tasks.flow_slug
              AND t.status IN ('queued', 'started')
              AND jsonb_typeof(m.ptr) = 'object'
              AND t.run_id::pg_catalog.text = m.ptr ->> 'run_id'
              AND t.step_slug = m.ptr ->> 'step_slug'
              AND t.task_index::pg_catalog.text = m.ptr ->> 'task_index');
        IF v_orphans IS NOT NULL THEN
            PERFORM flowworker.queue_archive(start_tasks.flow_slug, v_orphans);
        END IF;
    END IF;
    IF v_locked IS NULL THEN
        RETURN;
    END IF;

    -- ---------- Wait deadlines: no work for a worker ----------
    IF v_waits THEN
        PERFORM flowworker._time_out_wait(c) FROM unnest(v_locked) c WHERE c.is_wait;
        SELECT array_agg(c) INTO v_locked FROM unnest(v_locked) c WHERE NOT c.is_wait;
        IF v_locked IS NULL THEN
            RETURN;
        END IF;
    END IF;

    -- Claims that expired on their last attempt fail their task and run.
    FOR v_exhausted IN
        SELECT * FROM unnest(v_locked) c WHERE c.attempts_count >= c.max_attempts
    LOOP
        PERFORM flowworker._fail_lost_task(v_exhausted);
        v_lost := true;
    END LOOP;

    IF v_lost THEN
        -- A lost task above may have failed its run and cancelled tasks locked here.
        SELECT array_agg(c) INTO v_locked FROM unnest(v_locked) c
        WHERE c.attempts_count < c.max_attempts
          AND EXISTS (SELECT 1 FROM flowworker.step_tasks t
                      WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug
                        AND t.task_index = c.task_index AND t.status = c.status);
        IF v_locked IS NULL THEN
            RETURN;
        END IF;
    END IF;
    -- A task whose worker was lost twice may be what kills workers (a poison
    -- task): claim it alone, and the worker runs it alone, so that if it kills
    -- the next worker too it takes nothing else along. (Once lost is common:
    -- a crash, a deploy; those tasks are re-claimed together as usual.)
    IF EXISTS (SELECT 1 FROM unnest(v_locked) c
               WHERE c.status = 'started' AND c.attempts_count >= 2) THEN
        SELECT ARRAY[c] INTO v_locked FROM unnest(v_locked) c
        WHERE c.status = 'started' AND c.attempts_count >= 2 ORDER BY c.msg_id LIMIT 1;
    END IF;

    EXECUTE format(
        'UPDATE flowworker.%I q
         SET vt = now() + make_interval(secs => c.timeout + $2), read_ct = q.read_ct + 1
         FROM unnest($1) c WHERE q.ctid = c.msg_tid', q)
        USING v_locked, grace_seconds;

    RETURN QUERY
    WITH claimed AS (
        UPDATE flowworker.step_tasks t
        SET status = 'started', attempts_count = t.attempts_count + 1, started_at = now(),
            worker_id = start_tasks.worker_id,
            error_message = CASE WHEN t.status = 'started'
                                 THEN 'claim expired: the worker running attempt '
                                      || t.attempts_count || ' was lost'
                                 ELSE t.error_message END
        FROM unnest(v_locked) c
        WHERE t.ctid = c.task_tid
        RETURNING t.run_id, t.step_slug, t.task_index, t.flow_slug, t.attempts_count, c.msg_id,
                  t.input, c.timeout, c.status = 'started' AND c.attempts_count >= 2 AS isolated
    )
    SELECT c.msg_id, c.run_id, c.step_slug, c.task_index, c.attempts_count,
           CASE
               WHEN s.step_type = 'map' THEN c.input
               WHEN s.deps_count = 0 THEN r.input
               ELSE (
                   SELECT jsonb_object_agg(d.dep_slug, ss.output)
                   FROM flowworker.deps d
                   JOIN flowworker.step_states ss ON ss.run_id = c.run_id AND ss.step_slug = d.dep_slug
                   WHERE d.flow_slug = c.flow_slug AND d.step_slug = c.step_slug)
           END,
           CASE WHEN NOT x.input_is_flow_input AND NOT x.large THEN r.input END,
           NOT x.input_is_flow_input AND x.large,
           c.timeout, c.isolated,
           extract(epoch FROM now() - (v_vts)[array_position(v_msg_ids, c.msg_id)])::double precision
    FROM claimed c
    JOIN flowworker.runs r ON r.run_id = c.run_id
    JOIN flowworker.steps s ON s.flow_slug = c.flow_slug AND s.step_slug = c.step_slug
    -- pg_column_size reads a stored value's size without decompressing it.
    CROSS JOIN LATERAL (SELECT s.step_type = 'single' AND s.deps_count = 0 AS input_is_flow_input,
                               pg_column_size(r.input) > 8192 AS large) AS x
    ORDER BY c.msg_id;
END;
$$;
