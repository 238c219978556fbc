-- Map steps whose last task just completed: their output is every task's
-- output in index order. A step whose outputs add up past
-- max_map_output_bytes fails its run instead (the next step's input would
-- be that large, and past 256 MB jsonb_agg cannot build it at all), so its
-- size is summed before anything is built. The caller holds the run locks
-- and passes the completed steps on to _complete_steps.
CREATE FUNCTION flowworker._complete_maps(
    p_run_ids uuid[], p_step_slugs text[], p_flow_slugs text[],
    OUT runs uuid[], OUT steps text[], OUT flows text[], OUT outputs jsonb[]
)
LANGUAGE plpgsql
SET search_path = ''
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    v_limit bigint;
    v_big pg_catalog.record;
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = 'max_map_output_bytes';
    FOR v_big IN
        SELECT x.run_id, x.step_slug, sz.tasks, sz.bytes
        FROM unnest(p_run_ids, p_step_slugs) AS x(run_id, step_slug)
        CROSS JOIN LATERAL (SELECT count(*) AS tasks, sum(pg_column_size(t.output)) AS bytes
                            FROM flowworker.step_tasks t
                            WHERE t.run_id = x.run_id AND t.step_slug = x.step_slug) AS sz
        WHERE sz.bytes > v_limit
        ORDER BY x.run_id
    LOOP
        PERFORM flowworker._fail_run(v_big.run_id, v_big.step_slug, format(
            'the outputs of its %s map tasks add up to %s bytes, over the limit of %s bytes '
            '(flowworker.config max_map_output_bytes)', v_big.tasks, v_big.bytes, v_limit));
    END LOOP;
    SELECT array_agg(x.run_id), array_agg(x.step_slug), array_agg(x.flow_slug),
           array_agg(o.output)
    INTO runs, steps, flows, outputs
    FROM unnest(p_run_ids, p_step_slugs, p_flow_slugs) AS x(run_id, step_slug, flow_slug)
    JOIN flowworker.runs r ON r.run_id = x.run_id AND r.status IN ('started', 'paused')
    CROSS JOIN LATERAL (SELECT jsonb_agg(t.output ORDER BY t.task_index) AS output
                        FROM flowworker.step_tasks t
                        WHERE t.run_id = x.run_id AND t.step_slug = x.step_slug) AS o;
END;
$$;
