-- Start every step of a run whose deps are all complete: queue its tasks, or
-- complete it at once when it maps over an empty array (which may make more
-- steps ready, hence the loop). The caller holds the run lock.
CREATE FUNCTION flowworker._start_ready_steps(p_run_id uuid)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_run flowworker.runs;
    v_step pg_catalog.record;
    v_source pg_catalog.jsonb;
    v_count int;
    v_progress boolean := true;
BEGIN
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = p_run_id;
    WHILE v_progress AND v_run.status = 'started' LOOP
        v_progress := false;
        FOR v_step IN
            SELECT ss.step_slug, s.step_type, coalesce(s.start_delay, 0) AS start_delay,
                   (SELECT d.dep_slug FROM flowworker.deps d
                    WHERE d.flow_slug = s.flow_slug AND d.step_slug = s.step_slug
                      AND s.step_type = 'map') AS map_source
            FROM flowworker.step_states ss
            JOIN flowworker.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            WHERE ss.run_id = p_run_id AND ss.status = 'created' AND ss.remaining_deps = 0
            ORDER BY s.step_index
        LOOP
            v_count := 1;
            IF v_step.step_type = 'map' THEN
                v_source := v_run.input;
                IF v_step.map_source IS NOT NULL THEN
                    SELECT ss.output INTO v_source FROM flowworker.step_states ss
                    WHERE ss.run_id = p_run_id AND ss.step_slug = v_step.map_source;
                END IF;
                IF jsonb_typeof(v_source) IS DISTINCT FROM 'array' THEN
                    PERFORM flowworker._fail_run(p_run_id, v_step.step_slug, format(
                        'map step %s expects an array from %s, got %s', v_step.step_slug,
                        coalesce(v_step.map_source, 'the flow input'),
                        coalesce(jsonb_typeof(v_source), 'null')));
                    RETURN;
                END IF;
                v_count := jsonb_array_length(v_source);
            END IF;
            UPDATE flowworker.step_states ss
            SET status = 'started', started_at = now(), initial_tasks = v_count,
                remaining_tasks = v_count
            WHERE ss.run_id = p_run_id AND ss.step_slug = v_step.step_slug;
            IF v_count = 0 THEN
                PERFORM flowworker._complete_steps(ARRAY[p_run_id], ARRAY[v_step.step_slug],
                                                   ARRAY['[]'::pg_catalog.jsonb]);
                v_progress := true;
            ELSE
                PERFORM flowworker._queue_tasks(v_run.flow_slug, p_run_id, v_step.step_slug,
                                                v_count, v_step.start_delay);
            END IF;
        END LOOP;
        SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = p_run_id;
    END LOOP;
END;
$$;
