-- 0005 handler control and errors that say which attempt and which step:
-- fail_task and ack_tasks take a retry delay and a `final` flag (a handler
-- that raised flowworker.Fail or RetryAfter, or an exception its step does
-- not retry); a failed attempt's error starts `attempt n of m:`; a run's
-- error names the step that failed; a completed task drops the error of an
-- earlier attempt; ack_tasks can say which runs ended in the call. Workers
-- of version 2 keep running against it: the new arguments have defaults and
-- ack_tasks only gains result columns.

DROP FUNCTION flowworker.fail_task(uuid, text, int, int, text, uuid);
DROP FUNCTION flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[]);

-- Fail a run: the failing step is marked failed with p_error, the run with
-- `step <slug> failed: <p_error>`, every other unfinished step and task is
-- cancelled, and their messages are archived. The caller holds the run lock.
CREATE OR REPLACE FUNCTION flowworker._fail_run(p_run_id uuid, p_step_slug text, p_error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
BEGIN
    UPDATE flowworker.runs r
    SET status = 'failed', failed_at = now(),
        error_message = format('step %s failed: %s', p_step_slug, p_error)
    WHERE r.run_id = p_run_id AND r.status = 'started'
    RETURNING r.flow_slug INTO v_flow_slug;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_states ss
    SET status = 'failed', failed_at = now(), error_message = p_error
    WHERE ss.run_id = p_run_id AND ss.step_slug = p_step_slug;
    PERFORM flowworker._cancel_unfinished(p_run_id, v_flow_slug);
END;
$$;

-- Start every step of these runs whose deps are all complete: queue its
-- tasks, or complete it at once when it maps over an empty array (which
-- may make more steps ready, hence the loop). A map step whose source is
-- not an array, or is wider than max_map_tasks, fails its run. Set-based: a batch of acknowledgements
-- starts the next steps of all its runs in a few statements. The caller
-- holds the run locks.
CREATE OR REPLACE FUNCTION flowworker._start_ready_steps(p_run_ids uuid[])
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
-- Plans: one generic plan, rows by key only (see "Plans" in 0000_schema.sql).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    v_runs pg_catalog.uuid[] := p_run_ids;
    v_ready pg_catalog.record;
    v_bad pg_catalog.record;
    v_flow pg_catalog.text;
    v_max_tasks bigint;
BEGIN
    SELECT c.value INTO v_max_tasks FROM flowworker.config c WHERE c.name = 'max_map_tasks';
    WHILE cardinality(v_runs) > 0 LOOP
        -- The ready steps, with the size of each map step's array (NULL when
        -- it is not an array), in run and step order.
        SELECT array_agg(y.run_id ORDER BY y.run_id, y.step_index) AS runs,
               array_agg(y.step_slug ORDER BY y.run_id, y.step_index) AS steps,
               array_agg(y.flow_slug ORDER BY y.run_id, y.step_index) AS flows,
               array_agg(y.n ORDER BY y.run_id, y.step_index) AS counts,
               array_agg(y.delay ORDER BY y.run_id, y.step_index) AS delays,
               array_agg(y.source ORDER BY y.run_id, y.step_index) AS sources
        INTO v_ready
        FROM (
            SELECT x.*, CASE WHEN NOT x.is_map THEN 1
                             WHEN jsonb_typeof(x.source) = 'array'
                             THEN jsonb_array_length(x.source) END AS n
            FROM (
                SELECT ss.run_id, ss.step_slug, ss.flow_slug, s.step_index,
                       coalesce(s.start_delay, 0) AS delay, s.step_type = 'map' AS is_map,
                       CASE WHEN s.step_type = 'map' THEN flowworker._map_source(rr.r, s) END
                           AS source
                FROM flowworker.step_states ss
                -- The run by key for each step state, never the other way round:
                -- started runs are most of the table.
                CROSS JOIN LATERAL (SELECT r FROM flowworker.runs r
                                    WHERE r.run_id = ss.run_id OFFSET 0) AS rr
                JOIN flowworker.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
                WHERE ss.run_id = ANY (v_runs) AND ss.status = 'created' AND ss.remaining_deps = 0
                  AND (rr.r).status = 'started'
                OFFSET 0  -- evaluate each map source once
            ) AS x
        ) AS y;
        IF v_ready.runs IS NULL THEN
            RETURN;
        END IF;

        -- A map step whose source is not an array, or too wide, fails its run
        -- (the first such step of a run, in step order); nothing else of
        -- that run starts.
        IF array_position(v_ready.counts, NULL) IS NOT NULL
           OR EXISTS (SELECT 1 FROM unnest(v_ready.counts) AS n WHERE n > v_max_tasks) THEN
            FOR v_bad IN
                SELECT DISTINCT ON (x.run_id) x.run_id, x.step_slug,
                       (SELECT d.dep_slug FROM flowworker.deps d
                        WHERE d.flow_slug = s.flow_slug AND d.step_slug = s.step_slug) AS dep_slug,
                       x.n, r AS run, s AS step
                FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts)
                         WITH ORDINALITY AS x(run_id, step_slug, flow_slug, n, ord)
                JOIN flowworker.runs r ON r.run_id = x.run_id
                JOIN flowworker.steps s ON s.flow_slug = x.flow_slug AND s.step_slug = x.step_slug
                WHERE x.n IS NULL OR x.n > v_max_tasks
                ORDER BY x.run_id, x.ord
            LOOP
                PERFORM flowworker._fail_run(v_bad.run_id, v_bad.step_slug, CASE
                    WHEN v_bad.n IS NULL THEN format(
                        'a map step expects an array from %s, got %s',
                        coalesce(v_bad.dep_slug, 'the flow input'),
                        coalesce(jsonb_typeof(flowworker._map_source(v_bad.run, v_bad.step)),
                                 'null'))
                    ELSE format('it would start %s map tasks, over the limit of %s '
                                '(flowworker.config max_map_tasks)', v_bad.n, v_max_tasks) END);
            END LOOP;
            CONTINUE;  -- the ready steps again, those of the failed runs left out
        END IF;

        UPDATE flowworker.step_states ss
        SET status = 'started', started_at = now(), initial_tasks = x.n, remaining_tasks = x.n
        FROM unnest(v_ready.runs, v_ready.steps, v_ready.counts) AS x(run_id, step_slug, n)
        WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug;

        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_ready.flows) AS f LOOP
            PERFORM flowworker._queue_tasks(v_flow, array_agg(x.run_id), array_agg(x.step_slug),
                                            array_agg(x.n), array_agg(x.delay),
                                            array_agg(x.source))
            FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts,
                        v_ready.delays, v_ready.sources)
                     AS x(run_id, step_slug, flow_slug, n, delay, source)
            WHERE x.flow_slug = v_flow AND x.n > 0
            HAVING count(*) > 0;
        END LOOP;

        -- Empty maps are complete at once, which may make more steps ready.
        SELECT flowworker._complete_steps(array_agg(x.run_id), array_agg(x.step_slug),
                                          array_agg(x.flow_slug),
                                          array_agg('[]'::pg_catalog.jsonb))
        INTO v_runs
        FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts)
                 AS x(run_id, step_slug, flow_slug, n)
        WHERE x.n = 0
        HAVING count(*) > 0;
        v_runs := coalesce(v_runs, '{}');
    END LOOP;
END;
$$;

-- Map steps whose last task just completed: their output is every task's
-- output in index order. A step whose outputs add up past
-- max_map_output_bytes fails its run instead (the next step's input would
-- be that large, and past 256 MB jsonb_agg cannot build it at all), so its
-- size is summed before anything is built. The caller holds the run locks
-- and passes the completed steps on to _complete_steps.
CREATE OR REPLACE FUNCTION flowworker._complete_maps(
    p_run_ids uuid[], p_step_slugs text[], p_flow_slugs text[],
    OUT runs uuid[], OUT steps text[], OUT flows text[], OUT outputs jsonb[]
)
LANGUAGE plpgsql
SET search_path = ''
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    v_limit bigint;
    v_big pg_catalog.record;
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = 'max_map_output_bytes';
    FOR v_big IN
        SELECT x.run_id, x.step_slug, sz.tasks, sz.bytes
        FROM unnest(p_run_ids, p_step_slugs) AS x(run_id, step_slug)
        CROSS JOIN LATERAL (SELECT count(*) AS tasks, sum(pg_column_size(t.output)) AS bytes
                            FROM flowworker.step_tasks t
                            WHERE t.run_id = x.run_id AND t.step_slug = x.step_slug) AS sz
        WHERE sz.bytes > v_limit
        ORDER BY x.run_id
    LOOP
        PERFORM flowworker._fail_run(v_big.run_id, v_big.step_slug, format(
            'the outputs of its %s map tasks add up to %s bytes, over the limit of %s bytes '
            '(flowworker.config max_map_output_bytes)', v_big.tasks, v_big.bytes, v_limit));
    END LOOP;
    SELECT array_agg(x.run_id), array_agg(x.step_slug), array_agg(x.flow_slug),
           array_agg(o.output)
    INTO runs, steps, flows, outputs
    FROM unnest(p_run_ids, p_step_slugs, p_flow_slugs) AS x(run_id, step_slug, flow_slug)
    JOIN flowworker.runs r ON r.run_id = x.run_id AND r.status = 'started'
    CROSS JOIN LATERAL (SELECT jsonb_agg(t.output ORDER BY t.task_index) AS output
                        FROM flowworker.step_tasks t
                        WHERE t.run_id = x.run_id AND t.step_slug = x.step_slug) AS o;
END;
$$;

-- Record a failed attempt under its claim: the attempt number and the
-- worker holding it (a guessed attempt number from another worker login
-- changes nothing). Returns 'retry' when the task is queued again (visible
-- after retry_after seconds if given, else after the backoff delay),
-- 'failed' when it is not (attempts exhausted, or `final`: the handler said
-- so) and its run failed, 'stale' when the claim is no longer current.
-- The error is stored as `attempt n of m: <error>`. Its text is stored with
-- every failed attempt, so a huge one is cut to 8,192 characters and a note
-- of how many were cut, as the worker cuts an exception's text (a text the
-- worker already cut is left as it is).
CREATE FUNCTION flowworker.fail_task(
    run_id uuid, step_slug text, task_index int, attempt int, error_message text,
    worker_id uuid DEFAULT NULL, retry_after int DEFAULT NULL, final boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_flow_slug pg_catalog.text;
    v_task flowworker.step_tasks;
    v_max_attempts int;
    v_base_delay int;
    c_keep CONSTANT int := 8192;  -- executor.MAX_ERROR_CHARS
    v_error pg_catalog.text := CASE
        WHEN pg_catalog.length(fail_task.error_message) > c_keep + 100
        THEN pg_catalog.left(fail_task.error_message, c_keep) || '... ['
             || (pg_catalog.length(fail_task.error_message) - c_keep) || ' more characters cut]'
        ELSE fail_task.error_message END;
BEGIN
    IF fail_task.worker_id IS NULL THEN
        RAISE EXCEPTION 'fail_task needs the worker_id that holds the claim'
            USING ERRCODE = '22004';
    END IF;
    IF fail_task.retry_after NOT BETWEEN 0 AND 86400 THEN
        RAISE EXCEPTION 'fail_task: retry_after must be between 0 and 86400 seconds, not %',
            fail_task.retry_after USING ERRCODE = '22023';
    END IF;
    SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
    WHERE r.run_id = fail_task.run_id AND r.status = 'started' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    SELECT * INTO v_task FROM flowworker.step_tasks t
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index
      AND t.status = 'started' AND t.attempts_count = fail_task.attempt
      AND t.worker_id = fail_task.worker_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    SELECT coalesce(s.max_attempts, f.max_attempts), coalesce(s.base_delay, f.base_delay)
    INTO v_max_attempts, v_base_delay
    FROM flowworker.steps s JOIN flowworker.flows f ON f.flow_slug = s.flow_slug
    WHERE s.flow_slug = v_flow_slug AND s.step_slug = fail_task.step_slug;
    v_error := format('attempt %s of %s: %s', v_task.attempts_count, v_max_attempts, v_error);

    IF v_task.attempts_count < v_max_attempts AND NOT coalesce(fail_task.final, false) THEN
        UPDATE flowworker.step_tasks t
        SET status = 'queued', error_message = v_error
        WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index;
        PERFORM flowworker.queue_set_vt(v_flow_slug, ARRAY[v_task.message_id],
            coalesce(fail_task.retry_after,
                     flowworker.retry_delay(v_base_delay, v_task.attempts_count)));
        RETURN 'retry';
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', error_message = v_error, failed_at = now()
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[v_task.message_id]);
    PERFORM flowworker._fail_run(fail_task.run_id, fail_task.step_slug, v_error);
    RETURN 'failed';
END;
$$;

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
    -- locked ones, those still going take outcomes.
    SELECT coalesce(array_agg(l.run_id) FILTER (WHERE l.status = 'started'), '{}'),
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
                  = 'started' THEN
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
        WHERE r.run_id = ANY (v_live) AND r.status <> 'started';
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

REVOKE ALL ON FUNCTION
    flowworker.fail_task(uuid, text, int, int, text, uuid, int, boolean),
    flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[], int[],
                         boolean[], boolean)
FROM PUBLIC;
DO $grants$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'flowworker_worker') THEN
        GRANT EXECUTE ON FUNCTION
            flowworker.fail_task(uuid, text, int, int, text, uuid, int, boolean),
            flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[], int[],
                                 boolean[], boolean)
            TO flowworker_worker;
    END IF;
END;
$grants$;

INSERT INTO flowworker.migrations (version, name, min_worker_version)
VALUES (5, 'handler_control', 2);
