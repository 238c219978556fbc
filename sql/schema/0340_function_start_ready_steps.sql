-- Start every step of these runs whose deps are all complete: queue its
-- tasks, or complete it at once when it maps over an empty array (which
-- may make more steps ready, hence the loop). A map step whose source is
-- not an array fails its run. Set-based: a batch of acknowledgements
-- starts the next steps of all its runs in a few statements. The caller
-- holds the run locks.
CREATE FUNCTION flowworker._start_ready_steps(p_run_ids uuid[])
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_runs pg_catalog.uuid[] := p_run_ids;
    v_bad pg_catalog.record;
    v_started pg_catalog.record;
    v_flow pg_catalog.text;
BEGIN
    WHILE cardinality(v_runs) > 0 LOOP
        -- Map steps whose source is not an array fail their run (the first
        -- such step of a run, in step order).
        FOR v_bad IN
            SELECT DISTINCT ON (ss.run_id) ss.run_id, ss.step_slug,
                   format('map step %s expects an array from %s, got %s', ss.step_slug,
                          coalesce((SELECT d.dep_slug FROM flowworker.deps d
                                    WHERE d.flow_slug = s.flow_slug
                                      AND d.step_slug = s.step_slug), 'the flow input'),
                          coalesce(jsonb_typeof(flowworker._map_source(r, s)), 'null')) AS error
            FROM flowworker.step_states ss
            JOIN flowworker.runs r ON r.run_id = ss.run_id
            JOIN flowworker.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            WHERE ss.run_id = ANY (v_runs) AND ss.status = 'created' AND ss.remaining_deps = 0
              AND r.status = 'started' AND s.step_type = 'map'
              AND jsonb_typeof(flowworker._map_source(r, s)) IS DISTINCT FROM 'array'
            ORDER BY ss.run_id, s.step_index
        LOOP
            PERFORM flowworker._fail_run(v_bad.run_id, v_bad.step_slug, v_bad.error);
        END LOOP;

        WITH ready AS (
            SELECT ss.run_id, ss.step_slug, ss.flow_slug, s.step_index,
                   coalesce(s.start_delay, 0) AS delay,
                   CASE WHEN s.step_type = 'map'
                        THEN jsonb_array_length(flowworker._map_source(r, s))
                        ELSE 1 END AS n
            FROM flowworker.step_states ss
            JOIN flowworker.runs r ON r.run_id = ss.run_id
            JOIN flowworker.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            WHERE ss.run_id = ANY (v_runs) AND ss.status = 'created' AND ss.remaining_deps = 0
              AND r.status = 'started'
        ), started AS (
            UPDATE flowworker.step_states ss
            SET status = 'started', started_at = now(), initial_tasks = ready.n,
                remaining_tasks = ready.n
            FROM ready
            WHERE ss.run_id = ready.run_id AND ss.step_slug = ready.step_slug
            RETURNING ready.*
        )
        SELECT array_agg(st.run_id ORDER BY st.run_id, st.step_index) AS runs,
               array_agg(st.step_slug ORDER BY st.run_id, st.step_index) AS steps,
               array_agg(st.flow_slug ORDER BY st.run_id, st.step_index) AS flows,
               array_agg(st.n ORDER BY st.run_id, st.step_index) AS counts,
               array_agg(st.delay ORDER BY st.run_id, st.step_index) AS delays
        INTO v_started
        FROM started st;
        IF v_started.runs IS NULL THEN
            RETURN;
        END IF;

        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_started.flows) AS f LOOP
            PERFORM flowworker._queue_tasks(v_flow, array_agg(x.run_id), array_agg(x.step_slug),
                                            array_agg(x.n), array_agg(x.delay))
            FROM unnest(v_started.runs, v_started.steps, v_started.flows, v_started.counts,
                        v_started.delays) AS x(run_id, step_slug, flow_slug, n, delay)
            WHERE x.flow_slug = v_flow AND x.n > 0
            HAVING count(*) > 0;
        END LOOP;

        -- Empty maps are complete at once, which may make more steps ready.
        SELECT coalesce(flowworker._complete_steps(array_agg(x.run_id), array_agg(x.step_slug),
                                                   array_agg(x.flow_slug),
                                                   array_agg('[]'::pg_catalog.jsonb)), '{}')
        INTO v_runs
        FROM unnest(v_started.runs, v_started.steps, v_started.flows, v_started.counts)
                 AS x(run_id, step_slug, flow_slug, n)
        WHERE x.n = 0
        HAVING count(*) > 0;
        v_runs := coalesce(v_runs, '{}');
    END LOOP;
END;
$$;
