-- Give a resumed run's messages back to the claims, each after what was
-- left of its delay when the run was paused. The caller holds the run lock.
CREATE FUNCTION flowworker._unpark_messages(p_run_id uuid, p_flow_slug text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
SET enable_seqscan = off
AS $$
DECLARE
    v_msg_ids bigint[];
    v_delays pg_catalog.interval[];
BEGIN
    WITH unparked AS (
        UPDATE flowworker.step_tasks t SET paused_delay = NULL
        FROM (SELECT t2.run_id, t2.step_slug, t2.task_index, t2.paused_delay
              FROM flowworker.step_tasks t2
              WHERE t2.run_id = p_run_id AND t2.paused_delay IS NOT NULL FOR UPDATE) old
        WHERE t.run_id = old.run_id AND t.step_slug = old.step_slug
          AND t.task_index = old.task_index
        RETURNING t.message_id, old.paused_delay
    )
    SELECT array_agg(u.message_id), array_agg(u.paused_delay) INTO v_msg_ids, v_delays
    FROM unparked u;
    IF v_msg_ids IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'UPDATE flowworker.%I q SET vt = now() + d.delay
         FROM unnest($1, $2) AS d(msg_id, delay) WHERE q.msg_id = d.msg_id',
        'q_' || flowworker.check_slug(p_flow_slug, 'flow slug'))
        USING v_msg_ids, v_delays;
    IF EXISTS (SELECT 1 FROM unnest(v_delays) AS d WHERE d = '0'::pg_catalog.interval) THEN
        PERFORM flowworker.queue_notify(p_flow_slug);
    END IF;
END;
$$;
