-- Record a task's output under the claim that produced it: its attempt
-- number and the worker holding it. Returns true when this call recorded
-- it; false, changing nothing, when that claim is not current (the task was
-- re-claimed, already finished, or its run is over) or is another worker's.
-- Unlike the worker's ack_tasks it waits for a run another transaction holds.
-- There is one implementation of completing: this is ack_tasks with one outcome.
CREATE FUNCTION flowworker.complete_task(
    run_id uuid, step_slug text, task_index int, attempt int, output jsonb,
    worker_id uuid DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    IF complete_task.worker_id IS NULL THEN
        RAISE EXCEPTION 'complete_task needs the worker_id that holds the claim'
            USING ERRCODE = '22004';
    END IF;
    PERFORM 1 FROM flowworker.runs r WHERE r.run_id = complete_task.run_id FOR UPDATE;
    PERFORM 1 FROM flowworker.step_tasks t
    WHERE t.run_id = complete_task.run_id AND t.step_slug = complete_task.step_slug
      AND t.task_index = complete_task.task_index AND t.status = 'started'
      AND t.attempts_count = complete_task.attempt AND t.worker_id = complete_task.worker_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN (SELECT a.result = 'completed'
            FROM flowworker.ack_tasks(ARRAY[complete_task.run_id], ARRAY[complete_task.step_slug],
                                      ARRAY[complete_task.task_index],
                                      ARRAY[complete_task.attempt], ARRAY[complete_task.output],
                                      ARRAY[NULL::pg_catalog.text],
                                      ARRAY[complete_task.worker_id]) AS a);
END;
$$;
