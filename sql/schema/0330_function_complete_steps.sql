-- Record steps' outputs, count them off their dependents and their runs,
-- and complete the runs whose last step this was. Set-based: one call for
-- every step a batch of acknowledgements finished. The caller holds the
-- run locks. Returns the runs that go on (the caller starts what became
-- ready in them).
CREATE FUNCTION flowworker._complete_steps(
    p_run_ids uuid[], p_step_slugs text[], p_flow_slugs text[], p_outputs jsonb[],
    p_recorded boolean DEFAULT false
)
RETURNS uuid[]
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_going_on pg_catalog.uuid[];
    v_completed pg_catalog.uuid[];
    v_flows pg_catalog.text[];
BEGIN
    -- p_recorded: the caller has marked the steps completed with these outputs already.
    IF NOT p_recorded THEN
        UPDATE flowworker.step_states ss
        SET status = 'completed', output = f.output, completed_at = now(), remaining_tasks = 0
        FROM unnest(p_run_ids, p_step_slugs, p_outputs) AS f(run_id, step_slug, output)
        WHERE ss.run_id = f.run_id AND ss.step_slug = f.step_slug;
    END IF;

    UPDATE flowworker.step_states ss
    SET remaining_deps = ss.remaining_deps - x.n
    FROM (
        SELECT f.run_id, d.step_slug, count(*)::int AS n
        FROM unnest(p_run_ids, p_step_slugs, p_flow_slugs) AS f(run_id, step_slug, flow_slug)
        JOIN flowworker.deps d ON d.flow_slug = f.flow_slug AND d.dep_slug = f.step_slug
        GROUP BY f.run_id, d.step_slug
    ) AS x
    WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug;

    -- A run's output is its leaf steps' outputs. A flow with one leaf (a
    -- single step, a chain, a DAG that ends in one step) completes with
    -- that leaf, whose output is in hand: no lookup of the run's steps.
    WITH leaves AS (
        SELECT s.flow_slug, count(*) AS n, min(s.step_slug) AS leaf
        FROM flowworker.steps s
        WHERE s.flow_slug = ANY (p_flow_slugs)
          AND NOT EXISTS (SELECT 1 FROM flowworker.deps d
                          WHERE d.flow_slug = s.flow_slug AND d.dep_slug = s.step_slug)
        GROUP BY s.flow_slug
    ), counted AS (
        UPDATE flowworker.runs r
        SET remaining_steps = r.remaining_steps - x.n,
            status = CASE WHEN r.remaining_steps = x.n THEN 'completed' ELSE r.status END,
            completed_at = CASE WHEN r.remaining_steps = x.n THEN now() END,
            paused_at = CASE WHEN r.remaining_steps = x.n THEN NULL ELSE r.paused_at END,
            output = CASE WHEN r.remaining_steps = x.n THEN coalesce(x.leaf_output, (
                SELECT coalesce(jsonb_object_agg(ss.step_slug, ss.output), '{}'::pg_catalog.jsonb)
                FROM flowworker.step_states ss
                WHERE ss.run_id = r.run_id
                  AND NOT EXISTS (SELECT 1 FROM flowworker.deps d
                                  WHERE d.flow_slug = r.flow_slug AND d.dep_slug = ss.step_slug)))
            END
        FROM (SELECT f.run_id, count(*)::int AS n,
                     (array_agg(jsonb_build_object(f.step_slug, f.output))
                          FILTER (WHERE l.n = 1 AND f.step_slug = l.leaf))[1] AS leaf_output
              FROM unnest(p_run_ids, p_step_slugs, p_flow_slugs, p_outputs)
                       AS f(run_id, step_slug, flow_slug, output)
              LEFT JOIN leaves l ON l.flow_slug = f.flow_slug
              GROUP BY f.run_id) AS x
        WHERE r.run_id = x.run_id
        RETURNING r.run_id, r.flow_slug, r.remaining_steps
    )
    SELECT array_agg(c.run_id) FILTER (WHERE c.remaining_steps > 0),
           array_agg(c.run_id) FILTER (WHERE c.remaining_steps = 0),
           array_agg(DISTINCT c.flow_slug) FILTER (WHERE c.remaining_steps = 0)
    INTO v_going_on, v_completed, v_flows
    FROM counted c;

    -- ---------- Runs completed: their history, and whoever waits for them ----------
    IF v_completed IS NOT NULL THEN
        INSERT INTO flowworker.events (run_id, event)
        SELECT c, 'run.completed' FROM unnest(v_completed) AS c;
        PERFORM flowworker._run_ended(f) FROM unnest(v_flows) AS f;
    END IF;
    RETURN coalesce(v_going_on, '{}'::pg_catalog.uuid[]);
END;
$$;
