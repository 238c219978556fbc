CREATE FUNCTION flowworker.register_worker(worker_id uuid, flow_slug text, hostname text, pid int)
RETURNS flowworker.workers
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    INSERT INTO flowworker.workers (worker_id, flow_slug, hostname, pid)
    VALUES (register_worker.worker_id, flowworker.check_slug(register_worker.flow_slug, 'flow slug'),
            register_worker.hostname, register_worker.pid)
    ON CONFLICT (worker_id) DO UPDATE
        SET last_heartbeat_at = now(), stopped_at = NULL
    RETURNING *;
$$;
