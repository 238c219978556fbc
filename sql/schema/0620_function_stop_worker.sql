CREATE FUNCTION flowworker.stop_worker(worker_id uuid)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    UPDATE flowworker.workers w SET stopped_at = now()
    WHERE w.worker_id = stop_worker.worker_id AND w.stopped_at IS NULL;
$$;
