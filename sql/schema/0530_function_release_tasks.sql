-- Hand claimed tasks back for immediate redelivery without spending an
-- attempt (graceful shutdown). Only claims that are still current and held
-- by the worker named for each are released: a retried release cannot hand
-- back the claim another worker has since taken with the same attempt
-- number, nor one worker login another's. Returns how many were. A task
-- whose run another transaction holds for longer than a moment is left
-- claimed (it is redelivered when the claim expires): a shutdown must not
-- wait on an application.
CREATE FUNCTION flowworker.release_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    worker_ids uuid[]
)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
SET enable_seqscan = off
AS $$
DECLARE
    v_released int := 0;
    v_task pg_catalog.record;
    v_flow_slug pg_catalog.text;
    v_message_id bigint;
BEGIN
    IF worker_ids IS NULL OR cardinality(worker_ids) <> cardinality(run_ids)
       OR array_position(worker_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'release_tasks needs the worker_id holding each claim'
            USING ERRCODE = '22004';
    END IF;
    -- One task at a time, each under its run lock, in the lock order.
    FOR v_task IN
        SELECT * FROM unnest(run_ids, step_slugs, task_indexes, attempts, worker_ids)
            AS c(run_id, step_slug, task_index, attempt, worker_id)
        ORDER BY c.run_id, c.step_slug, c.task_index
    LOOP
        CONTINUE WHEN NOT flowworker._lock_run_briefly(v_task.run_id);
        UPDATE flowworker.step_tasks t
        SET status = 'queued', attempts_count = t.attempts_count - 1
        WHERE t.run_id = v_task.run_id AND t.step_slug = v_task.step_slug
          AND t.task_index = v_task.task_index
          AND t.status = 'started' AND t.attempts_count = v_task.attempt
          AND t.worker_id = v_task.worker_id
        RETURNING t.flow_slug, t.message_id INTO v_flow_slug, v_message_id;
        IF FOUND THEN
            PERFORM flowworker.queue_set_vt(v_flow_slug, ARRAY[v_message_id], 0);
            IF EXISTS (SELECT 1 FROM flowworker.runs r
                       WHERE r.run_id = v_task.run_id AND r.status = 'paused') THEN
                PERFORM flowworker._park_messages(v_task.run_id, v_flow_slug);
            END IF;
            v_released := v_released + 1;
        END IF;
    END LOOP;
    RETURN v_released;
END;
$$;
