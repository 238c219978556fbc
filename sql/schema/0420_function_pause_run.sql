-- Pause a run: none of its tasks is claimed until resume_run; tasks already
-- running finish and are recorded, and the steps they make ready wait.
-- Pausing a paused run changes nothing; pausing a finished run is an error.
CREATE FUNCTION flowworker.pause_run(run_id uuid)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
BEGIN
    v_run := flowworker._lock_run_for(pause_run.run_id, 'paused', ARRAY['started', 'paused']);
    IF v_run.status = 'paused' THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r SET status = 'paused', paused_at = now()
    WHERE r.run_id = pause_run.run_id
    RETURNING * INTO v_run;
    PERFORM flowworker._park_messages(v_run.run_id, v_run.flow_slug);
    INSERT INTO flowworker.events (run_id, event, actor)
    VALUES (v_run.run_id, 'run.paused', flowworker._actor());
    RETURN v_run;
END;
$$;

-- Resume a paused run where it stopped: its tasks are claimed again, each
-- after what was left of its delay, and the steps that became ready while
-- it was paused start. Resuming a started run changes nothing; resuming a
-- finished run is an error.
CREATE FUNCTION flowworker.resume_run(run_id uuid)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
BEGIN
    v_run := flowworker._lock_run_for(resume_run.run_id, 'resumed', ARRAY['started', 'paused']);
    IF v_run.status = 'started' THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r SET status = 'started', paused_at = NULL
    WHERE r.run_id = resume_run.run_id;
    PERFORM flowworker._unpark_messages(v_run.run_id, v_run.flow_slug);
    PERFORM flowworker._start_ready_steps(ARRAY[v_run.run_id]);
    INSERT INTO flowworker.events (run_id, event, actor)
    VALUES (v_run.run_id, 'run.resumed', flowworker._actor());
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = resume_run.run_id;
    RETURN v_run;
END;
$$;
