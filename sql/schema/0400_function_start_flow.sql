-- Start a run. With a run_id that already exists for this flow, return that
-- run unchanged, so callers can retry a start safely.
CREATE FUNCTION flowworker.start_flow(flow_slug text, input jsonb DEFAULT '{}', run_id uuid DEFAULT NULL)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
    v_root_map pg_catalog.text;
BEGIN
    PERFORM flowworker.check_slug(start_flow.flow_slug, 'flow slug');
    -- Share the flow's row (add_step locks it FOR UPDATE), so that the steps
    -- read below are the whole flow, not a half-added step.
    PERFORM 1 FROM flowworker.flows f WHERE f.flow_slug = start_flow.flow_slug FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow % does not exist', quote_literal(start_flow.flow_slug)
            USING ERRCODE = 'P0002', HINT = 'compile the flow and apply it: flowworker compile';
    END IF;
    IF start_flow.input IS NULL THEN
        RAISE EXCEPTION 'flow % input must not be NULL', quote_literal(start_flow.flow_slug)
            USING ERRCODE = '22004';
    END IF;
    PERFORM flowworker._check_size(start_flow.input, 'max_input_bytes',
                                   format('the input of flow %L', start_flow.flow_slug));
    SELECT s.step_slug INTO v_root_map FROM flowworker.steps s
    WHERE s.flow_slug = start_flow.flow_slug AND s.step_type = 'map' AND s.deps_count = 0
    LIMIT 1;
    IF v_root_map IS NOT NULL AND jsonb_typeof(start_flow.input) <> 'array' THEN
        RAISE EXCEPTION 'flow % maps step % over its input, which must be a JSON array, not %',
            quote_literal(start_flow.flow_slug), quote_literal(v_root_map), jsonb_typeof(start_flow.input)
            USING ERRCODE = '22023';
    END IF;

    INSERT INTO flowworker.runs AS r (run_id, flow_slug, input, remaining_steps)
    SELECT coalesce(start_flow.run_id, gen_random_uuid()), start_flow.flow_slug, start_flow.input,
           (SELECT count(*) FROM flowworker.steps s WHERE s.flow_slug = start_flow.flow_slug)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING * INTO v_run;
    IF NOT FOUND THEN
        SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = start_flow.run_id;
        IF v_run.flow_slug <> start_flow.flow_slug THEN
            RAISE EXCEPTION 'run % belongs to flow %, not %', start_flow.run_id,
                quote_literal(v_run.flow_slug), quote_literal(start_flow.flow_slug)
                USING ERRCODE = '23505';
        END IF;
        RETURN v_run;
    END IF;

    INSERT INTO flowworker.step_states (run_id, step_slug, flow_slug, remaining_deps)
    SELECT v_run.run_id, s.step_slug, s.flow_slug, s.deps_count
    FROM flowworker.steps s WHERE s.flow_slug = start_flow.flow_slug;
    IF v_run.remaining_steps = 0 THEN
        UPDATE flowworker.runs r SET status = 'completed', completed_at = now(), output = '{}'
        WHERE r.run_id = v_run.run_id;
    ELSE
        PERFORM flowworker._start_ready_steps(ARRAY[v_run.run_id]);
    END IF;
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = v_run.run_id;
    RETURN v_run;
END;
$$;
