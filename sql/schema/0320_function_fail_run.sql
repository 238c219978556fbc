-- Fail a run (started or paused): the failing step is marked p_step_status
-- (failed, or timed_out for a wait) with p_error, the run failed with
-- `step <slug> failed: <p_error>`, every other unfinished step and task is
-- cancelled, and their messages are archived. The caller holds the run lock.
CREATE FUNCTION flowworker._fail_run(p_run_id uuid, p_step_slug text, p_error text,
                                     p_step_status text DEFAULT 'failed')
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
BEGIN
    UPDATE flowworker.runs r
    SET status = 'failed', failed_at = now(), paused_at = NULL,
        error_message = format('step %s failed: %s', p_step_slug, p_error)
    WHERE r.run_id = p_run_id AND r.status IN ('started', 'paused')
    RETURNING r.flow_slug INTO v_flow_slug;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_states ss
    SET status = p_step_status, failed_at = now(), error_message = p_error
    WHERE ss.run_id = p_run_id AND ss.step_slug = p_step_slug;
    PERFORM flowworker._cancel_unfinished(p_run_id, v_flow_slug);
    INSERT INTO flowworker.events (run_id, step_slug, event, detail)
    VALUES (p_run_id, p_step_slug, 'run.failed', pg_catalog.jsonb_build_object('error', p_error));
    PERFORM flowworker._run_ended(v_flow_slug);
END;
$$;
