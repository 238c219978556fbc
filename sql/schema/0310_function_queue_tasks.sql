-- Create steps' tasks and one message per task, for many steps of one flow
-- in one statement: p_counts[i] tasks of step p_step_slugs[i] in run
-- p_run_ids[i], visible after p_delays[i] seconds.
CREATE FUNCTION flowworker._queue_tasks(
    p_flow_slug text, p_run_ids uuid[], p_step_slugs text[], p_counts int[], p_delays int[]
)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    q pg_catalog.text := 'q_' || flowworker.check_slug(p_flow_slug, 'flow slug');
BEGIN
    EXECUTE format(
        'WITH t AS (
            INSERT INTO flowworker.step_tasks (run_id, step_slug, task_index, flow_slug, message_id)
            SELECT x.run_id, x.step_slug, i, $1, nextval(%L::pg_catalog.regclass)
            FROM unnest($2, $3, $4) WITH ORDINALITY AS x(run_id, step_slug, n, ord),
                 generate_series(0, x.n - 1) AS i
            ORDER BY x.ord, i
            RETURNING run_id, step_slug, task_index, message_id
        )
        INSERT INTO flowworker.%I (msg_id, vt, message)
        SELECT t.message_id, now() + make_interval(secs => x.delay),
               jsonb_build_object(''run_id'', t.run_id, ''step_slug'', t.step_slug,
                                  ''task_index'', t.task_index)
        FROM t JOIN unnest($2, $3, $5) AS x(run_id, step_slug, delay)
          ON x.run_id = t.run_id AND x.step_slug = t.step_slug', format('flowworker.%I', q || '$seq'), q)
        USING p_flow_slug, p_run_ids, p_step_slugs, p_counts, p_delays;
    IF EXISTS (SELECT 1 FROM unnest(p_delays) AS d WHERE d <= 0) THEN
        PERFORM flowworker.queue_notify(p_flow_slug);
    END IF;
END;
$$;
