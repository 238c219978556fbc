-- Record a failed attempt under its claim: the attempt number and the
-- worker holding it (a guessed attempt number from another worker login
-- changes nothing). Returns 'retry' when the task is queued again (visible
-- after retry_after seconds if given, else after the backoff delay),
-- 'failed' when it is not (attempts exhausted, or `final`: the handler said
-- so) and its run failed, 'stale' when the claim is no longer current.
-- The error is stored as `attempt n of m: <error>`. Its text is stored with
-- every failed attempt, so a huge one is cut to 8,192 characters and a note
-- of how many were cut, as the worker cuts an exception's text (a text the
-- worker already cut is left as it is).
CREATE FUNCTION flowworker.fail_task(
    run_id uuid, step_slug text, task_index int, attempt int, error_message text,
    worker_id uuid DEFAULT NULL, retry_after int DEFAULT NULL, final boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_flow_slug pg_catalog.text;
    v_paused boolean;
    v_task flowworker.step_tasks;
    v_max_attempts int;
    v_base_delay int;
    c_keep CONSTANT int := 8192;  -- executor.MAX_ERROR_CHARS
    v_error pg_catalog.text := CASE
        WHEN pg_catalog.length(fail_task.error_message) > c_keep + 100
        THEN pg_catalog.left(fail_task.error_message, c_keep) || '... ['
             || (pg_catalog.length(fail_task.error_message) - c_keep) || ' more characters cut]'
        ELSE fail_task.error_message END;
BEGIN
    IF fail_task.worker_id IS NULL THEN
        RAISE EXCEPTION 'fail_task needs the worker_id that holds the claim'
            USING ERRCODE = '22004';
    END IF;
    IF fail_task.retry_after NOT BETWEEN 0 AND 86400 THEN
        RAISE EXCEPTION 'fail_task: retry_after must be between 0 and 86400 seconds, not %',
            fail_task.retry_after USING ERRCODE = '22023';
    END IF;
    SELECT r.flow_slug, r.status = 'paused' INTO v_flow_slug, v_paused FROM flowworker.runs r
    WHERE r.run_id = fail_task.run_id AND r.status IN ('started', 'paused') FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    SELECT * INTO v_task FROM flowworker.step_tasks t
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index
      AND t.status = 'started' AND t.attempts_count = fail_task.attempt
      AND t.worker_id = fail_task.worker_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    SELECT coalesce(s.max_attempts, f.max_attempts), coalesce(s.base_delay, f.base_delay)
    INTO v_max_attempts, v_base_delay
    FROM flowworker.steps s JOIN flowworker.flows f ON f.flow_slug = s.flow_slug
    WHERE s.flow_slug = v_flow_slug AND s.step_slug = fail_task.step_slug;
    v_max_attempts := v_max_attempts + v_task.attempts_base;  -- attempts go on after a retry
    v_error := format('attempt %s of %s: %s', v_task.attempts_count, v_max_attempts, v_error);
    INSERT INTO flowworker.events (run_id, step_slug, task_index, attempt, event, detail)
    VALUES (fail_task.run_id, fail_task.step_slug, fail_task.task_index, v_task.attempts_count,
            'task.failed', pg_catalog.jsonb_build_object('error', v_error));

    IF v_task.attempts_count < v_max_attempts AND NOT coalesce(fail_task.final, false) THEN
        UPDATE flowworker.step_tasks t
        SET status = 'queued', error_message = v_error
        WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index;
        PERFORM flowworker.queue_set_vt(v_flow_slug, ARRAY[v_task.message_id],
            coalesce(fail_task.retry_after,
                     flowworker.retry_delay(v_base_delay,
                                            v_task.attempts_count - v_task.attempts_base)));
        IF v_paused THEN  -- the retry waits for resume_run, keeping its delay
            PERFORM flowworker._park_messages(fail_task.run_id, v_flow_slug);
        END IF;
        RETURN 'retry';
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', error_message = v_error, failed_at = now()
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[v_task.message_id]);
    PERFORM flowworker._fail_run(fail_task.run_id, fail_task.step_slug, v_error);
    RETURN 'failed';
END;
$$;
