-- Apply many outcomes in one call: an output completes a task, an error
-- fails the attempt (fail_task). Set-based for completions: the runs are
-- locked in run_id order first, so two workers acknowledging overlapping
-- runs lock them in the same order. Returns, per input position (1-based),
-- 'completed', 'retry', 'failed' or 'stale' (the claim is no longer current).
-- With worker_ids, a claim is also the worker that holds it: an attempt
-- number handed back by release_tasks and claimed again by another worker
-- cannot be answered by the first. A repeated completion of a claim that
-- was already applied (its reply lost) answers 'completed' again.
CREATE FUNCTION flowworker.ack_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    outputs jsonb[], errors text[], worker_ids uuid[] DEFAULT NULL
)
RETURNS TABLE (ord int, result text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Every statement here reaches its rows by key. Plans are cached per
-- session: one made while the tables were small (a new install, a worker
-- started before the load) would scan them whole for as long as the
-- session lives, so scans are ruled out; and a batch joins ~100 rows to
-- the hot, cached tables, which the default random_page_cost prices as
-- dearer than a scan. Array arguments of every size would otherwise be
-- planned anew on each call (a custom plan looks cheaper for each size):
-- the one generic plan saves that, ~0.5 ms a call.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET random_page_cost = 1.1
AS $$
DECLARE
    v_limit bigint;
    v_done_ord bigint[];
    v_done_runs pg_catalog.uuid[];
    v_done_steps pg_catalog.text[];
    v_done_flows pg_catalog.text[];
    v_done_msgs bigint[];
    v_done_outputs pg_catalog.jsonb[];
    v_over pg_catalog.uuid[];
    v_flow pg_catalog.text;
    v_finished pg_catalog.record;
    v_fail pg_catalog.record;
    v_fail_ords bigint[] := '{}';
    v_fail_results pg_catalog.text[] := '{}';
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = 'max_output_bytes';
    -- Raises for the first output over the limit (the worker then fails that attempt).
    PERFORM flowworker._check_size(a.output, 'max_output_bytes',
                                   format('the output of step %L', a.step_slug))
    FROM unnest(step_slugs, outputs) AS a(step_slug, output)
    WHERE pg_column_size(a.output) > v_limit;

    -- Lock the runs in run_id order; note the few that are over already.
    SELECT coalesce(array_agg(l.run_id) FILTER (WHERE l.status <> 'started'), '{}')
    INTO v_over
    FROM (SELECT r.run_id, r.status FROM flowworker.runs r WHERE r.run_id = ANY (run_ids)
          ORDER BY r.run_id FOR UPDATE) AS l;

    -- Completions whose claim is current, in a run that is still going.
    WITH done AS (
        UPDATE flowworker.step_tasks t
        SET status = 'completed', output = a.output, completed_at = now()
        FROM unnest(run_ids, step_slugs, task_indexes, attempts, outputs, errors, worker_ids)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, output, error,
                                      worker_id, ord)
        WHERE a.error IS NULL AND NOT (a.run_id = ANY (v_over))
          AND t.run_id = a.run_id AND t.step_slug = a.step_slug AND t.task_index = a.task_index
          AND t.status = 'started' AND t.attempts_count = a.attempt
          AND (a.worker_id IS NULL OR t.worker_id = a.worker_id)
        RETURNING a.ord, t.run_id, t.step_slug, t.flow_slug, t.message_id, a.output
    )
    SELECT array_agg(d.ord), array_agg(d.run_id), array_agg(d.step_slug),
           array_agg(d.flow_slug), array_agg(d.message_id), array_agg(d.output)
    INTO v_done_ord, v_done_runs, v_done_steps, v_done_flows, v_done_msgs, v_done_outputs
    FROM done d;

    IF v_done_ord IS NOT NULL THEN
        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_done_flows) AS f LOOP
            EXECUTE format('DELETE FROM flowworker.%I WHERE msg_id = ANY ($1)',
                           'q_' || flowworker.check_slug(v_flow, 'flow slug'))
                USING ARRAY(SELECT m FROM unnest(v_done_flows, v_done_msgs) AS x(f, m)
                            WHERE x.f = v_flow);
        END LOOP;

        -- Count them off their steps; a step at zero is complete, marked in
        -- the same UPDATE (a second update of a row this transaction wrote
        -- would run the foreign-key checks again). A single step's output is
        -- its one task's, which is in hand.
        WITH x AS (
            SELECT d.run_id, d.step_slug, count(*)::int AS n, (array_agg(d.output))[1] AS output
            FROM unnest(v_done_runs, v_done_steps, v_done_outputs) AS d(run_id, step_slug, output)
            GROUP BY d.run_id, d.step_slug
        ), counted AS (
            UPDATE flowworker.step_states ss
            SET remaining_tasks = ss.remaining_tasks - x.n,
                status = CASE WHEN ss.remaining_tasks = x.n THEN 'completed' ELSE ss.status END,
                completed_at = CASE WHEN ss.remaining_tasks = x.n THEN now()
                                    ELSE ss.completed_at END,
                output = CASE WHEN ss.remaining_tasks <> x.n THEN ss.output
                              WHEN s.step_type = 'map' THEN (
                                  SELECT jsonb_agg(t.output ORDER BY t.task_index)
                                  FROM flowworker.step_tasks t
                                  WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug)
                              ELSE x.output END
            FROM x, flowworker.steps s
            WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug
              AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            RETURNING ss.run_id, ss.step_slug, ss.flow_slug, ss.remaining_tasks, ss.output
        )
        SELECT array_agg(c.run_id) AS runs, array_agg(c.step_slug) AS steps,
               array_agg(c.flow_slug) AS flows, array_agg(c.output) AS outputs
        INTO v_finished
        FROM counted c
        WHERE c.remaining_tasks = 0;

        IF v_finished.runs IS NOT NULL THEN
            PERFORM flowworker._start_ready_steps(flowworker._complete_steps(
                v_finished.runs, v_finished.steps, v_finished.flows, v_finished.outputs, true));
        END IF;
    END IF;

    -- Failures are rare: one at a time, in run order (their run is locked).
    FOR v_fail IN
        SELECT a.* FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
        WHERE a.error IS NOT NULL
          AND (a.worker_id IS NULL OR EXISTS (
              SELECT 1 FROM flowworker.step_tasks t
              WHERE t.run_id = a.run_id AND t.step_slug = a.step_slug
                AND t.task_index = a.task_index AND t.worker_id = a.worker_id))
        ORDER BY a.run_id, a.step_slug, a.task_index
    LOOP
        v_fail_ords := v_fail_ords || v_fail.ord;
        v_fail_results := v_fail_results || flowworker.fail_task(
            v_fail.run_id, v_fail.step_slug, v_fail.task_index, v_fail.attempt, v_fail.error);
    END LOOP;

    RETURN QUERY
    SELECT a.ord::int,
           CASE WHEN a.ord = ANY (coalesce(v_done_ord, '{}'::bigint[])) THEN 'completed'
                WHEN f.result IS NOT NULL THEN f.result
                WHEN a.error IS NULL AND a.worker_id IS NOT NULL AND EXISTS (
                    SELECT 1 FROM flowworker.step_tasks t
                    WHERE t.run_id = a.run_id AND t.step_slug = a.step_slug
                      AND t.task_index = a.task_index AND t.status = 'completed'
                      AND t.attempts_count = a.attempt AND t.worker_id = a.worker_id)
                THEN 'completed'
                ELSE 'stale' END
    FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
             WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
    LEFT JOIN unnest(v_fail_ords, v_fail_results) AS f(ord, result) ON f.ord = a.ord
    ORDER BY a.ord;
END;
$$;
