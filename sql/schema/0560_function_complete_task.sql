-- Record a task's output under the claim (attempt) that produced it.
-- Returns false and changes nothing when that claim is no longer current:
-- the task was re-claimed, already finished, or its run is over.
-- There is one implementation of completing: this is ack_tasks with one outcome.
CREATE FUNCTION flowworker.complete_task(
    run_id uuid, step_slug text, task_index int, attempt int, output jsonb
)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT a.result = 'completed'
    FROM flowworker.ack_tasks(ARRAY[complete_task.run_id], ARRAY[complete_task.step_slug],
                              ARRAY[complete_task.task_index], ARRAY[complete_task.attempt],
                              ARRAY[complete_task.output], ARRAY[NULL::pg_catalog.text]) AS a;
$$;
