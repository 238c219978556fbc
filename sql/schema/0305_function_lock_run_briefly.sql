-- Lock a run's row, waiting for it a short while (50 ms) at most: long
-- enough for another worker's acknowledgement of the same run to commit,
-- short enough that an application transaction holding the row (cancel_run,
-- then slow work) does not hold up the caller. False when it is still held.
CREATE FUNCTION flowworker._lock_run_briefly(p_run_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_before pg_catalog.text := pg_catalog.current_setting('lock_timeout');
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', '50ms', true);
    PERFORM 1 FROM flowworker.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    PERFORM pg_catalog.set_config('lock_timeout', v_before, true);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;  -- the failed block undid the setting too
END;
$$;
