-- A claim expired on the task's last attempt: its worker was lost every
-- time. Fail the task and its run. start_tasks already holds the task lock,
-- against the lock order, so it must never wait: the run is locked with
-- SKIP LOCKED and everything that failing the run touches (the run's
-- unfinished tasks and their messages) with NOWAIT. When any of it is busy,
-- nothing is changed, the message stays visible and a later claim does this.
-- A run that is already over (a lost sibling failed it) is left as it is.
CREATE FUNCTION flowworker._fail_lost_task(c flowworker.task_claim)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
    v_error pg_catalog.text := format('claim expired on attempt %s of %s: the worker running it was lost',
                           c.attempts_count, c.max_attempts);
BEGIN
    BEGIN
        SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
        WHERE r.run_id = c.run_id AND r.status = 'started' FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        PERFORM 1 FROM flowworker.step_tasks t
        WHERE t.run_id = c.run_id AND t.status IN ('queued', 'started')
        FOR UPDATE NOWAIT;
        EXECUTE format(
            'SELECT 1 FROM flowworker.%I q JOIN flowworker.step_tasks t ON t.message_id = q.msg_id
             WHERE t.run_id = $1 AND t.flow_slug = $2 AND t.status IN (''queued'', ''started'')
             FOR UPDATE OF q NOWAIT', 'q_' || flowworker.check_slug(v_flow_slug, 'flow slug'))
            USING c.run_id, v_flow_slug;
    EXCEPTION WHEN lock_not_available THEN
        RETURN;
    END;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[c.msg_id]);
    PERFORM flowworker._fail_run(c.run_id, c.step_slug, v_error);
END;
$$;
