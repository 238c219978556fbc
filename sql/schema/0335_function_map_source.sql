-- The array a map step maps over in a run: its dep's output, or the flow
-- input for a root map step.
CREATE FUNCTION flowworker._map_source(p_run flowworker.runs, p_step flowworker.steps)
RETURNS jsonb
LANGUAGE sql
STABLE
SET search_path = ''
AS $$
    SELECT CASE WHEN p_step.deps_count = 0 THEN p_run.input ELSE (
        SELECT ss.output FROM flowworker.deps d
        JOIN flowworker.step_states ss ON ss.run_id = p_run.run_id AND ss.step_slug = d.dep_slug
        WHERE d.flow_slug = p_step.flow_slug AND d.step_slug = p_step.step_slug) END
$$;
