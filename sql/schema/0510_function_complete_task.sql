-- Record a task's output under the claim (attempt) that produced it.
-- Returns false and changes nothing when that claim is no longer current:
-- the task was re-claimed, already finished, or its run is over.
CREATE FUNCTION flowworker.complete_task(
    run_id uuid, step_slug text, task_index int, attempt int, output jsonb
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_flow_slug pg_catalog.text;
    v_message_id bigint;
    v_step_type pg_catalog.text;
    v_remaining int;
BEGIN
    PERFORM flowworker._check_size(complete_task.output, 'max_output_bytes',
                                   format('the output of step %L', complete_task.step_slug));
    SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
    WHERE r.run_id = complete_task.run_id AND r.status = 'started' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'completed', output = complete_task.output, completed_at = now()
    WHERE t.run_id = complete_task.run_id AND t.step_slug = complete_task.step_slug
      AND t.task_index = complete_task.task_index
      AND t.status = 'started' AND t.attempts_count = complete_task.attempt
    RETURNING t.message_id INTO v_message_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM flowworker.queue_delete(v_flow_slug, ARRAY[v_message_id]);

    UPDATE flowworker.step_states ss SET remaining_tasks = ss.remaining_tasks - 1
    WHERE ss.run_id = complete_task.run_id AND ss.step_slug = complete_task.step_slug
    RETURNING ss.remaining_tasks INTO v_remaining;
    IF v_remaining > 0 THEN
        RETURN true;
    END IF;
    SELECT s.step_type INTO v_step_type FROM flowworker.steps s
    WHERE s.flow_slug = v_flow_slug AND s.step_slug = complete_task.step_slug;
    PERFORM flowworker._complete_step(complete_task.run_id, complete_task.step_slug,
        CASE WHEN v_step_type = 'map' THEN (
            SELECT jsonb_agg(t.output ORDER BY t.task_index) FROM flowworker.step_tasks t
            WHERE t.run_id = complete_task.run_id AND t.step_slug = complete_task.step_slug)
        ELSE complete_task.output END);
    PERFORM flowworker._start_ready_steps(complete_task.run_id);
    RETURN true;
END;
$$;
