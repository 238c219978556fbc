-- Returns false when the worker is unknown or was marked stopped.
CREATE FUNCTION flowworker.heartbeat_worker(worker_id uuid)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    WITH beat AS (
        UPDATE flowworker.workers w SET last_heartbeat_at = now()
        WHERE w.worker_id = heartbeat_worker.worker_id AND w.stopped_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM beat);
$$;
