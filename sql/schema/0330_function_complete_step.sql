-- Record a step's output, count it off its dependents and the run, and
-- complete the run when it was the last step. The caller holds the run lock
-- and starts whatever became ready.
CREATE FUNCTION flowworker._complete_step(p_run_id uuid, p_step_slug text, p_output jsonb)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
    v_remaining int;
BEGIN
    UPDATE flowworker.step_states ss
    SET status = 'completed', output = p_output, completed_at = now(), remaining_tasks = 0
    WHERE ss.run_id = p_run_id AND ss.step_slug = p_step_slug
    RETURNING ss.flow_slug INTO v_flow_slug;
    UPDATE flowworker.step_states ss
    SET remaining_deps = ss.remaining_deps - 1
    FROM flowworker.deps d
    WHERE d.flow_slug = v_flow_slug AND d.dep_slug = p_step_slug
      AND ss.run_id = p_run_id AND ss.step_slug = d.step_slug;
    UPDATE flowworker.runs r SET remaining_steps = r.remaining_steps - 1
    WHERE r.run_id = p_run_id
    RETURNING r.remaining_steps INTO v_remaining;
    IF v_remaining = 0 THEN
        UPDATE flowworker.runs r
        SET status = 'completed', completed_at = now(),
            output = (
                SELECT coalesce(jsonb_object_agg(ss.step_slug, ss.output), '{}'::pg_catalog.jsonb)
                FROM flowworker.step_states ss
                WHERE ss.run_id = p_run_id
                  AND NOT EXISTS (SELECT 1 FROM flowworker.deps d
                                  WHERE d.flow_slug = v_flow_slug AND d.dep_slug = ss.step_slug)
            )
        WHERE r.run_id = p_run_id;
    END IF;
END;
$$;
