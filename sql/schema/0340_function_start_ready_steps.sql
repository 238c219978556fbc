-- Start every step of these runs whose deps are all complete: queue its
-- tasks, or complete it at once when it maps over an empty array (which
-- may make more steps ready, hence the loop). A wait step starts waiting
-- for a signal instead (a fresh wait_token), with one task whose message
-- becomes visible at its deadline (`timeout`), if it has one: the claim
-- that finds it times the wait out. A map step whose source is
-- not an array, or is wider than max_map_tasks, fails its run. Set-based: a batch of acknowledgements
-- starts the next steps of all its runs in a few statements. The caller
-- holds the run locks.
CREATE FUNCTION flowworker._start_ready_steps(p_run_ids uuid[])
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
-- Plans: one generic plan, rows by key only (see "Plans" in 0000_schema.sql).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    v_runs pg_catalog.uuid[] := p_run_ids;
    v_ready pg_catalog.record;
    v_bad pg_catalog.record;
    v_flow pg_catalog.text;
    v_max_tasks bigint;
BEGIN
    SELECT c.value INTO v_max_tasks FROM flowworker.config c WHERE c.name = 'max_map_tasks';
    WHILE cardinality(v_runs) > 0 LOOP
        -- The ready steps, with the size of each map step's array (NULL when
        -- it is not an array), in run and step order.
        SELECT array_agg(y.run_id ORDER BY y.run_id, y.step_index) AS runs,
               array_agg(y.step_slug ORDER BY y.run_id, y.step_index) AS steps,
               array_agg(y.flow_slug ORDER BY y.run_id, y.step_index) AS flows,
               array_agg(y.n ORDER BY y.run_id, y.step_index) AS counts,
               array_agg(y.delay ORDER BY y.run_id, y.step_index) AS delays,
               array_agg(y.source ORDER BY y.run_id, y.step_index) AS sources,
               array_agg(y.kind ORDER BY y.run_id, y.step_index) AS kinds
        INTO v_ready
        FROM (
            SELECT x.*, CASE WHEN x.kind = 'wait' THEN (x.wait_timeout IS NOT NULL)::int
                             WHEN NOT x.is_map THEN 1
                             WHEN jsonb_typeof(x.source) = 'array'
                             THEN jsonb_array_length(x.source) END AS n
            FROM (
                SELECT ss.run_id, ss.step_slug, ss.flow_slug, s.step_index, s.step_type AS kind,
                       s.timeout AS wait_timeout,
                       CASE WHEN s.step_type = 'wait' THEN coalesce(s.timeout, 0)
                            ELSE coalesce(s.start_delay, 0) END AS delay,
                       s.step_type = 'map' AS is_map,
                       CASE WHEN s.step_type = 'map' THEN flowworker._map_source(rr.r, s) END
                           AS source
                FROM flowworker.step_states ss
                -- The run by key for each step state, never the other way round:
                -- started runs are most of the table.
                CROSS JOIN LATERAL (SELECT r FROM flowworker.runs r
                                    WHERE r.run_id = ss.run_id OFFSET 0) AS rr
                JOIN flowworker.steps s ON s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
                WHERE ss.run_id = ANY (v_runs) AND ss.status = 'created' AND ss.remaining_deps = 0
                  AND (rr.r).status = 'started'
                OFFSET 0  -- evaluate each map source once
            ) AS x
        ) AS y;
        IF v_ready.runs IS NULL THEN
            RETURN;
        END IF;

        -- A map step whose source is not an array, or too wide, fails its run
        -- (the first such step of a run, in step order); nothing else of
        -- that run starts.
        IF array_position(v_ready.counts, NULL) IS NOT NULL
           OR EXISTS (SELECT 1 FROM unnest(v_ready.counts) AS n WHERE n > v_max_tasks) THEN
            FOR v_bad IN
                SELECT DISTINCT ON (x.run_id) x.run_id, x.step_slug,
                       (SELECT d.dep_slug FROM flowworker.deps d
                        WHERE d.flow_slug = s.flow_slug AND d.step_slug = s.step_slug) AS dep_slug,
                       x.n, r AS run, s AS step
                FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts)
                         WITH ORDINALITY AS x(run_id, step_slug, flow_slug, n, ord)
                JOIN flowworker.runs r ON r.run_id = x.run_id
                JOIN flowworker.steps s ON s.flow_slug = x.flow_slug AND s.step_slug = x.step_slug
                WHERE x.n IS NULL OR x.n > v_max_tasks
                ORDER BY x.run_id, x.ord
            LOOP
                PERFORM flowworker._fail_run(v_bad.run_id, v_bad.step_slug, CASE
                    WHEN v_bad.n IS NULL THEN format(
                        'a map step expects an array from %s, got %s',
                        coalesce(v_bad.dep_slug, 'the flow input'),
                        coalesce(jsonb_typeof(flowworker._map_source(v_bad.run, v_bad.step)),
                                 'null'))
                    ELSE format('it would start %s map tasks, over the limit of %s '
                                '(flowworker.config max_map_tasks)', v_bad.n, v_max_tasks) END);
            END LOOP;
            CONTINUE;  -- the ready steps again, those of the failed runs left out
        END IF;

        UPDATE flowworker.step_states ss
        SET status = CASE WHEN x.kind = 'wait' THEN 'waiting' ELSE 'started' END,
            started_at = now(), initial_tasks = x.n, remaining_tasks = x.n,
            wait_token = CASE WHEN x.kind = 'wait' THEN gen_random_uuid() END,
            waiting_at = CASE WHEN x.kind = 'wait' THEN now() END
        FROM unnest(v_ready.runs, v_ready.steps, v_ready.counts, v_ready.kinds)
                 AS x(run_id, step_slug, n, kind)
        WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug;
        IF 'wait' = ANY (v_ready.kinds) THEN
            INSERT INTO flowworker.events (run_id, step_slug, event)
            SELECT x.run_id, x.step_slug, 'step.waiting'
            FROM unnest(v_ready.runs, v_ready.steps, v_ready.kinds) AS x(run_id, step_slug, kind)
            WHERE x.kind = 'wait';
        END IF;

        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_ready.flows) AS f LOOP
            PERFORM flowworker._queue_tasks(v_flow, array_agg(x.run_id), array_agg(x.step_slug),
                                            array_agg(x.n), array_agg(x.delay),
                                            array_agg(x.source))
            FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts,
                        v_ready.delays, v_ready.sources)
                     AS x(run_id, step_slug, flow_slug, n, delay, source)
            WHERE x.flow_slug = v_flow AND x.n > 0
            HAVING count(*) > 0;
        END LOOP;

        -- Empty maps are complete at once, which may make more steps ready.
        SELECT flowworker._complete_steps(array_agg(x.run_id), array_agg(x.step_slug),
                                          array_agg(x.flow_slug),
                                          array_agg('[]'::pg_catalog.jsonb))
        INTO v_runs
        FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts, v_ready.kinds)
                 AS x(run_id, step_slug, flow_slug, n, kind)
        WHERE x.n = 0 AND x.kind = 'map'
        HAVING count(*) > 0;
        v_runs := coalesce(v_runs, '{}');
    END LOOP;
END;
$$;
