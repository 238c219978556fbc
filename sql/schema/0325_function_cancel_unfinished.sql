-- Cancel every step and task of a run that has not finished, and archive
-- their messages so no worker claims them again.
CREATE FUNCTION flowworker._cancel_unfinished(p_run_id uuid, p_flow_slug text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_msg_ids bigint[];
BEGIN
    UPDATE flowworker.step_states ss SET status = 'cancelled'
    WHERE ss.run_id = p_run_id AND ss.status IN ('created', 'started', 'waiting');
    WITH cancelled AS (
        UPDATE flowworker.step_tasks t SET status = 'cancelled'
        WHERE t.run_id = p_run_id AND t.status IN ('queued', 'started')
        RETURNING t.message_id
    )
    SELECT array_agg(message_id) INTO v_msg_ids FROM cancelled;
    IF v_msg_ids IS NOT NULL THEN
        PERFORM flowworker.queue_archive(p_flow_slug, v_msg_ids);
    END IF;
END;
$$;
