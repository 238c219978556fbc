-- A claim expired on the task's last attempt: its worker was lost every
-- time. Fail the task and its run. start_tasks already holds the task lock,
-- against the lock order, so it must never wait (_lock_run_nowait): when
-- anything is busy, nothing is changed, the message stays visible and a
-- later claim does this. A run that is already over (a lost sibling failed
-- it) is left as it is.
CREATE FUNCTION flowworker._fail_lost_task(c flowworker.task_claim)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text := flowworker._lock_run_nowait(c.run_id);
    v_error pg_catalog.text := format('claim expired on attempt %s of %s: the worker running it was lost',
                           c.attempts_count, c.max_attempts);
BEGIN
    IF v_flow_slug IS NULL THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[c.msg_id]);
    INSERT INTO flowworker.events (run_id, step_slug, task_index, attempt, event, detail)
    VALUES (c.run_id, c.step_slug, c.task_index, c.attempts_count, 'task.failed',
            pg_catalog.jsonb_build_object('error', v_error));
    PERFORM flowworker._fail_run(c.run_id, c.step_slug, v_error);
END;
$$;
