-- Apply many outcomes in one call: an output completes a task, an error
-- fails the attempt (fail_task, with the outcome's retry_after and final).
-- Each outcome names its claim: the attempt number and the worker holding
-- it. Returns, per input position (1-based), `result`:
--   'completed'  the output is recorded (also for a repeated completion of
--                a claim that was already applied, its reply lost);
--   'retry'      the attempt failed and the task is queued again;
--   'failed'     the attempt failed, the task's attempts are spent, its run failed;
--   'stale'      the claim is no longer current (or never was this worker's);
--   'busy'       another transaction holds the run's row: nothing was
--                written, send the outcome again later;
-- and with report_runs, for an outcome whose run ended in this call, the
-- run's status, how long it ran and, when it failed, the step that failed
-- (`run_status`, `run_seconds`, `run_failed_step`; NULL otherwise): the
-- worker's run.completed / run.failed events.
-- Runs are locked in run_id order, skipping the ones held elsewhere, then
-- waiting for those a moment each: an application transaction that holds
-- one run (cancel_run, then slow work) must not hold up the outcomes of
-- every other run, while two workers acknowledging one run take turns.
CREATE FUNCTION flowworker.ack_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    outputs jsonb[], errors text[], worker_ids uuid[],
    retry_afters int[] DEFAULT NULL, finals boolean[] DEFAULT NULL,
    report_runs boolean DEFAULT false
)
RETURNS TABLE (ord int, result text, run_status text, run_seconds double precision,
               run_failed_step text)
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
DECLARE
    v_live pg_catalog.uuid[];
    v_locked pg_catalog.uuid[];
    v_busy pg_catalog.uuid[] := '{}';
    v_run pg_catalog.record;
    v_done_ord bigint[];
    v_done_runs pg_catalog.uuid[];
    v_done_steps pg_catalog.text[];
    v_done_flows pg_catalog.text[];
    v_done_msgs bigint[];
    v_done_outputs pg_catalog.jsonb[];
    v_flow pg_catalog.text;
    v_singles pg_catalog.record;
    v_maps pg_catalog.record;
    v_going_on pg_catalog.uuid[];
    v_fail pg_catalog.record;
    v_fail_ords bigint[] := '{}';
    v_fail_results pg_catalog.text[] := '{}';
    v_ended_runs pg_catalog.uuid[];
    v_ended_statuses pg_catalog.text[];
    v_ended_seconds double precision[];
    v_ended_steps pg_catalog.text[];
BEGIN
    -- ==================== GUARDS ====================
    IF worker_ids IS NULL OR cardinality(worker_ids) <> cardinality(run_ids)
       OR array_position(worker_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'ack_tasks needs the worker_id holding each claim'
            USING ERRCODE = '22004';
    END IF;
    -- Raises for the first output over the limits (the worker then fails that attempt).
    PERFORM flowworker._check_payloads(outputs, step_slugs, 'the output of step %L',
                                       'max_output_bytes');

    -- ==================== LOCK THE RUNS ====================
    -- In run_id order, skipping those another transaction holds; of the
    -- locked ones, those still going (started, or paused: running tasks
    -- finish and are recorded) take outcomes.
    SELECT coalesce(array_agg(l.run_id) FILTER (WHERE l.status IN ('started', 'paused')), '{}'),
           coalesce(array_agg(l.run_id), '{}')
    INTO v_live, v_locked
    FROM (SELECT r.run_id, r.status FROM flowworker.runs r WHERE r.run_id = ANY (run_ids)
          ORDER BY r.run_id FOR UPDATE SKIP LOCKED) AS l;
    IF cardinality(v_locked) < (SELECT count(DISTINCT x) FROM unnest(run_ids) AS x) THEN
        -- Skipped (or no such run): wait a moment for each, as another
        -- worker's acknowledgement of the same run ends in milliseconds;
        -- those still held are busy.
        FOR v_run IN
            SELECT r.run_id FROM flowworker.runs r
            WHERE r.run_id = ANY (run_ids) AND NOT r.run_id = ANY (v_locked)
            ORDER BY r.run_id
        LOOP
            IF NOT flowworker._lock_run_briefly(v_run.run_id) THEN
                v_busy := v_busy || v_run.run_id;
            ELSIF (SELECT r.status FROM flowworker.runs r WHERE r.run_id = v_run.run_id)
                  IN ('started', 'paused') THEN
                v_live := v_live || v_run.run_id;
            END IF;
        END LOOP;
    END IF;

    -- ==================== COMPLETIONS ====================
    -- ---------- Tasks whose claim is current, in runs still going ----------
    WITH done AS (
        UPDATE flowworker.step_tasks t
        SET status = 'completed', output = a.output, completed_at = now(),
            error_message = NULL  -- an earlier attempt's; every failed attempt is in its events
        FROM unnest(run_ids, step_slugs, task_indexes, attempts, outputs, errors, worker_ids)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, output, error,
                                      worker_id, ord)
        WHERE a.error IS NULL AND a.run_id = ANY (v_live)
          AND t.run_id = a.run_id AND t.step_slug = a.step_slug AND t.task_index = a.task_index
          AND t.status = 'started' AND t.attempts_count = a.attempt
          AND t.worker_id = a.worker_id
        RETURNING a.ord, t.run_id, t.step_slug, t.flow_slug, t.message_id, a.output
    )
    SELECT array_agg(d.ord), array_agg(d.run_id), array_agg(d.step_slug),
           array_agg(d.flow_slug), array_agg(d.message_id), array_agg(d.output)
    INTO v_done_ord, v_done_runs, v_done_steps, v_done_flows, v_done_msgs, v_done_outputs
    FROM done d;

    IF v_done_ord IS NOT NULL THEN
        -- ---------- Their messages ----------
        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_done_flows) AS f LOOP
            EXECUTE format('DELETE FROM flowworker.%I WHERE msg_id = ANY ($1)',
                           'q_' || flowworker.check_slug(v_flow, 'flow slug'))
                USING ARRAY(SELECT m FROM unnest(v_done_flows, v_done_msgs) AS x(f, m)
                            WHERE x.f = v_flow);
        END LOOP;

        -- ---------- Counted off their steps ----------
        -- A single step at zero is complete, marked in the same UPDATE (a
        -- second update of a row this transaction wrote would run the
        -- foreign-key checks again); its output is its one task's, in hand.
        -- A map step at zero is completed below, from all its tasks.
        WITH x AS (
            SELECT d.run_id, d.step_slug, count(*)::int AS n, (array_agg(d.output))[1] AS output
            FROM unnest(v_done_runs, v_done_steps, v_done_outputs) AS d(run_id, step_slug, output)
            GROUP BY d.run_id, d.step_slug
        ), counted AS (
            UPDATE flowworker.step_states ss
            SET remaining_tasks = ss.remaining_tasks - x.n,
                status = CASE WHEN ss.remaining_tasks = x.n AND s.step_type = 'single'
                              THEN 'completed' ELSE ss.status END,
                completed_at = CASE WHEN ss.remaining_tasks = x.n AND s.step_type = 'single'
                                    THEN now() ELSE ss.completed_at END,
                output = CASE WHEN ss.remaining_tasks = x.n AND s.step_type = 'single'
                              THEN x.output ELSE ss.output END
            FROM x, flowworker.steps s
            WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug
              AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            RETURNING ss.run_id, ss.step_slug, ss.flow_slug, ss.remaining_tasks, ss.output,
                      s.step_type
        )
        SELECT array_agg(c.run_id) FILTER (WHERE c.step_type = 'single') AS runs,
               array_agg(c.step_slug) FILTER (WHERE c.step_type = 'single') AS steps,
               array_agg(c.flow_slug) FILTER (WHERE c.step_type = 'single') AS flows,
               array_agg(c.output) FILTER (WHERE c.step_type = 'single') AS outputs,
               array_agg(c.run_id) FILTER (WHERE c.step_type = 'map') AS map_runs,
               array_agg(c.step_slug) FILTER (WHERE c.step_type = 'map') AS map_steps,
               array_agg(c.flow_slug) FILTER (WHERE c.step_type = 'map') AS map_flows
        INTO v_singles
        FROM counted c
        WHERE c.remaining_tasks = 0;

        -- ---------- Steps complete ----------
        v_going_on := '{}';
        IF v_singles.runs IS NOT NULL THEN
            v_going_on := flowworker._complete_steps(v_singles.runs, v_singles.steps,
                                                     v_singles.flows, v_singles.outputs, true);
        END IF;
        IF v_singles.map_runs IS NOT NULL THEN
            SELECT * INTO v_maps
            FROM flowworker._complete_maps(v_singles.map_runs, v_singles.map_steps,
                                           v_singles.map_flows);
            IF v_maps.runs IS NOT NULL THEN
                v_going_on := v_going_on || flowworker._complete_steps(
                    v_maps.runs, v_maps.steps, v_maps.flows, v_maps.outputs);
            END IF;
        END IF;
        IF cardinality(v_going_on) > 0 THEN
            PERFORM flowworker._start_ready_steps(v_going_on);
        END IF;
    END IF;

    -- ==================== FAILURES ====================
    -- Rare: one at a time, in run order (their run is locked).
    FOR v_fail IN
        SELECT a.* FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids,
                               retry_afters, finals)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id,
                                      retry_after, final, ord)
        WHERE a.error IS NOT NULL AND a.run_id = ANY (v_live)
        ORDER BY a.run_id, a.step_slug, a.task_index
    LOOP
        v_fail_ords := v_fail_ords || v_fail.ord;
        v_fail_results := v_fail_results || flowworker.fail_task(
            v_fail.run_id, v_fail.step_slug, v_fail.task_index, v_fail.attempt, v_fail.error,
            v_fail.worker_id, v_fail.retry_after, coalesce(v_fail.final, false));
    END LOOP;

    -- ==================== RUNS THAT ENDED ====================
    IF report_runs THEN
        SELECT array_agg(r.run_id), array_agg(r.status),
               array_agg(extract(epoch FROM coalesce(r.completed_at, r.failed_at)
                                            - r.started_at)::double precision),
               array_agg(CASE WHEN r.status = 'failed' THEN (
                   SELECT ss.step_slug FROM flowworker.step_states ss
                   WHERE ss.run_id = r.run_id AND ss.status = 'failed' LIMIT 1) END)
        INTO v_ended_runs, v_ended_statuses, v_ended_seconds, v_ended_steps
        FROM flowworker.runs r
        WHERE r.run_id = ANY (v_live) AND r.status NOT IN ('started', 'paused');
    END IF;

    -- ==================== RESULTS ====================
    RETURN QUERY
    SELECT a.ord::int,
           CASE WHEN a.ord = ANY (coalesce(v_done_ord, '{}'::bigint[])) THEN 'completed'
                WHEN f.result IS NOT NULL THEN f.result
                WHEN a.error IS NULL AND EXISTS (
                    SELECT 1 FROM flowworker.step_tasks t
                    WHERE t.run_id = a.run_id AND t.step_slug = a.step_slug
                      AND t.task_index = a.task_index AND t.status = 'completed'
                      AND t.attempts_count = a.attempt AND t.worker_id = a.worker_id)
                THEN 'completed'
                WHEN a.run_id = ANY (v_busy) THEN 'busy'
                ELSE 'stale' END,
           e.status, e.seconds, e.step
    FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
             WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
    LEFT JOIN unnest(v_fail_ords, v_fail_results) AS f(ord, result) ON f.ord = a.ord
    LEFT JOIN unnest(v_ended_runs, v_ended_statuses, v_ended_seconds, v_ended_steps)
                  AS e(run_id, status, seconds, step)
           ON e.run_id = a.run_id
    ORDER BY a.ord;
END;
$$;
