-- Cancel a run that has not finished (started or paused), keeping why on the
-- run and in its history; a finished run is returned unchanged.
CREATE FUNCTION flowworker.cancel_run(run_id uuid, reason text DEFAULT NULL)
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
    IF v_run.status NOT IN ('started', 'paused') THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r
    SET status = 'cancelled', cancelled_at = now(), paused_at = NULL,
        cancel_reason = cancel_run.reason
    WHERE r.run_id = cancel_run.run_id
    RETURNING * INTO v_run;
    PERFORM flowworker._cancel_unfinished(v_run.run_id, v_run.flow_slug);
    INSERT INTO flowworker.events (run_id, event, detail, actor)
    VALUES (v_run.run_id, 'run.cancelled',
            CASE WHEN cancel_run.reason IS NOT NULL
                 THEN pg_catalog.jsonb_build_object('reason', cancel_run.reason) END,
            flowworker._actor());
    PERFORM flowworker._run_ended(v_run.flow_slug);
    RETURN v_run;
END;
$$;
