-- Cancel a run that has not finished; a finished run is returned unchanged.
CREATE FUNCTION flowworker.cancel_run(run_id uuid)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
BEGIN
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = cancel_run.run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', cancel_run.run_id USING ERRCODE = 'P0002';
    END IF;
    IF v_run.status <> 'started' THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r SET status = 'cancelled', cancelled_at = now()
    WHERE r.run_id = cancel_run.run_id
    RETURNING * INTO v_run;
    PERFORM flowworker._cancel_unfinished(v_run.run_id, v_run.flow_slug);
    RETURN v_run;
END;
$$;
