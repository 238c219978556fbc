-- Inside start_tasks, which holds task and message locks against the lock
-- order and so must never wait: lock a started run and what failing it
-- touches (its unfinished tasks and their messages), or nothing at all.
-- The run's flow when all of it is locked; NULL when any of it is busy, or
-- the run is no longer started (then a later claim tries again, or there
-- is nothing to do).
CREATE FUNCTION flowworker._lock_run_nowait(p_run_id uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
BEGIN
    SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
    WHERE r.run_id = p_run_id AND r.status = 'started' FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM flowworker.step_tasks t
    WHERE t.run_id = p_run_id AND t.status IN ('queued', 'started')
    FOR UPDATE NOWAIT;
    EXECUTE format(
        'SELECT 1 FROM flowworker.%I q JOIN flowworker.step_tasks t ON t.message_id = q.msg_id
         WHERE t.run_id = $1 AND t.flow_slug = $2 AND t.status IN (''queued'', ''started'')
         FOR UPDATE OF q NOWAIT', 'q_' || flowworker.check_slug(v_flow_slug, 'flow slug'))
        USING p_run_id, v_flow_slug;
    RETURN v_flow_slug;
EXCEPTION WHEN lock_not_available THEN
    RETURN NULL;
END;
$$;
