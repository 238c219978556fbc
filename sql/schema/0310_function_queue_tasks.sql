-- Create steps' tasks and one message per task, for many steps of one flow:
-- p_counts[i] tasks of step p_step_slugs[i] in run p_run_ids[i], visible
-- after p_delays[i] seconds. A map step's array is p_sources[i] (NULL for a
-- single step): each task keeps its own element, so that a claim reads that
-- and not the whole array. The tasks are static SQL (planned once); the
-- queue insert is the one dynamic statement, kept trivial to plan.
CREATE FUNCTION flowworker._queue_tasks(
    p_flow_slug text, p_run_ids uuid[], p_step_slugs text[], p_counts int[], p_delays int[],
    p_sources jsonb[] DEFAULT NULL
)
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
    q pg_catalog.text := 'q_' || flowworker.check_slug(p_flow_slug, 'flow slug');
    v_seq pg_catalog.regclass := format('flowworker.%I', q || '$seq')::pg_catalog.regclass;
    v_msg_ids bigint[];
    v_vts pg_catalog.timestamptz[];
    v_messages pg_catalog.jsonb[];
    v_delays pg_catalog.jsonb;
BEGIN
    -- A step's start delay is the same in every run: look it up by step.
    SELECT jsonb_object_agg(x.step_slug, x.delay) INTO v_delays
    FROM unnest(p_step_slugs, p_delays) AS x(step_slug, delay);
    WITH t AS (
        INSERT INTO flowworker.step_tasks (run_id, step_slug, task_index, flow_slug, message_id,
                                           input)
        SELECT x.run_id, x.step_slug, i, p_flow_slug, nextval(v_seq), x.source -> i
        FROM unnest(p_run_ids, p_step_slugs, p_counts, p_sources)
                 WITH ORDINALITY AS x(run_id, step_slug, n, source, ord),
             generate_series(0, x.n - 1) AS i
        ORDER BY x.ord, i
        RETURNING run_id, step_slug, task_index, message_id
    )
    SELECT array_agg(t.message_id ORDER BY t.message_id),
           array_agg(now() + make_interval(secs => (v_delays ->> t.step_slug)::int)
                     ORDER BY t.message_id),
           array_agg(jsonb_build_object('run_id', t.run_id, 'step_slug', t.step_slug,
                                        'task_index', t.task_index) ORDER BY t.message_id)
    INTO v_msg_ids, v_vts, v_messages
    FROM t;
    EXECUTE format('INSERT INTO flowworker.%I (msg_id, vt, message) SELECT * FROM unnest($1, $2, $3)', q)
        USING v_msg_ids, v_vts, v_messages;
    IF EXISTS (SELECT 1 FROM unnest(p_delays) AS d WHERE d <= 0) THEN
        PERFORM flowworker.queue_notify(p_flow_slug);
    END IF;
END;
$$;
