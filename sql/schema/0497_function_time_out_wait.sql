-- A wait step's deadline: its task's message became visible because the
-- wait's timeout passed. Unless a signal came first, the step times out and
-- its run fails, naming it. Called from start_tasks, which must never wait
-- (_lock_run_nowait): when anything is busy, nothing changes and a later
-- claim sees the message again. No cron: the deadline is a delayed message.
CREATE FUNCTION flowworker._time_out_wait(c flowworker.task_claim)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text := flowworker._lock_run_nowait(c.run_id);
    v_error pg_catalog.text := format('timed out after %s s without a signal', c.timeout);
BEGIN
    IF v_flow_slug IS NULL THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[c.msg_id]);
    INSERT INTO flowworker.events (run_id, step_slug, event, detail)
    VALUES (c.run_id, c.step_slug, 'step.timed_out',
            pg_catalog.jsonb_build_object('timeout', c.timeout));
    PERFORM flowworker._fail_run(c.run_id, c.step_slug, v_error, 'timed_out');
END;
$$;
