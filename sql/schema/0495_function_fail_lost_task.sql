-- A claim expired on the task's last attempt: its worker was lost every
-- time. Fail the task and its run. The run lock is taken with SKIP LOCKED
-- (start_tasks already holds the task lock, against the lock order); when
-- it is busy, the message stays visible and a later claim does this.
CREATE FUNCTION flowworker._fail_lost_task(c flowworker.task_claim)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug text;
    v_error text := format('claim expired on attempt %s of %s: the worker running it was lost',
                           c.attempts_count, c.max_attempts);
BEGIN
    SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
    WHERE r.run_id = c.run_id FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[c.msg_id]);
    PERFORM flowworker._fail_run(c.run_id, c.step_slug, v_error);
END;
$$;
