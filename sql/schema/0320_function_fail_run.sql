-- Fail a run: the failing step is marked failed with p_error, the run with
-- `step <slug> failed: <p_error>`, every other unfinished step and task is
-- cancelled, and their messages are archived. The caller holds the run lock.
CREATE FUNCTION flowworker._fail_run(p_run_id uuid, p_step_slug text, p_error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
BEGIN
    UPDATE flowworker.runs r
    SET status = 'failed', failed_at = now(),
        error_message = format('step %s failed: %s', p_step_slug, p_error)
    WHERE r.run_id = p_run_id AND r.status = 'started'
    RETURNING r.flow_slug INTO v_flow_slug;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_states ss
    SET status = 'failed', failed_at = now(), error_message = p_error
    WHERE ss.run_id = p_run_id AND ss.step_slug = p_step_slug;
    PERFORM flowworker._cancel_unfinished(p_run_id, v_flow_slug);
END;
$$;
