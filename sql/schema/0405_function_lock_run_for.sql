-- Lock a run for an operator's action and check it is in a status the
-- action applies to; otherwise raise, naming the run and its status
-- (unknown run: no_data_found, P0002; wrong status: 55000).
CREATE FUNCTION flowworker._lock_run_for(p_run_id uuid, p_action text, p_statuses text[])
RETURNS flowworker.runs
LANGUAGE plpgsql
SET search_path = ''
SET enable_seqscan = off
AS $$
DECLARE
    v_run flowworker.runs;
BEGIN
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', p_run_id USING ERRCODE = 'P0002';
    END IF;
    IF NOT v_run.status = ANY (p_statuses) THEN
        RAISE EXCEPTION 'run % is %: only a run that is % can be %', p_run_id, v_run.status,
            array_to_string(p_statuses, ' or '), p_action
            USING ERRCODE = '55000';
    END IF;
    RETURN v_run;
END;
$$;
