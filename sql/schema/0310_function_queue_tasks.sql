-- Create a step's tasks and one message per task, in one statement.
CREATE FUNCTION flowworker._queue_tasks(
    p_flow_slug text, p_run_id uuid, p_step_slug text, p_count int, p_delay int
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
            SELECT $1, $2, i, $3, nextval(%L::pg_catalog.regclass) FROM generate_series(0, $4 - 1) AS i
            RETURNING run_id, step_slug, task_index, message_id
        )
        INSERT INTO flowworker.%I (msg_id, vt, message)
        SELECT t.message_id, now() + make_interval(secs => $5),
               jsonb_build_object(''run_id'', t.run_id, ''step_slug'', t.step_slug,
                                  ''task_index'', t.task_index)
        FROM t', format('flowworker.%I', q || '$seq'), q)
        USING p_run_id, p_step_slug, p_flow_slug, p_count, p_delay;
    IF p_delay <= 0 THEN
        PERFORM flowworker.queue_notify(p_flow_slug);
    END IF;
END;
$$;
