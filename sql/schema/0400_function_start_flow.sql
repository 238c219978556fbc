-- Start runs of a flow, one per input, in one statement: what an
-- application enqueueing a batch calls. run_ids (optional, one per input)
-- make the starts idempotent: a run_id that already exists for this flow
-- with the same input returns that run unchanged, so callers can retry a
-- start safely; one of another flow or with another input is an error (a
-- run id known to someone else must not hand them another caller's run).
-- Returns the runs in input order. Every input is
-- checked before anything is written, so a bad one starts none.
CREATE FUNCTION flowworker.start_flows(flow_slug text, inputs jsonb[], run_ids uuid[] DEFAULT NULL)
RETURNS SETOF flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: one generic plan, rows by key only (see "Plans" in 0000_schema.sql).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
#variable_conflict use_column
DECLARE
    v_root_map pg_catalog.text;
    v_max_tasks bigint;
    v_kind pg_catalog.text;
    v_width int;
    v_steps int;
    v_ids pg_catalog.uuid[];
    v_new pg_catalog.uuid[];
    v_made pg_catalog.uuid[];
    v_other pg_catalog.record;
    v_actor pg_catalog.text := flowworker._actor();
BEGIN
    PERFORM flowworker.check_slug(start_flows.flow_slug, 'flow slug');
    -- Share the flow's row (add_step locks it FOR UPDATE), so that the steps
    -- read below are the whole flow, not a half-added step.
    PERFORM 1 FROM flowworker.flows f WHERE f.flow_slug = start_flows.flow_slug FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow % does not exist', quote_literal(start_flows.flow_slug)
            USING ERRCODE = 'P0002', HINT = 'compile the flow and apply it: flowworker compile';
    END IF;
    IF start_flows.inputs IS NULL OR array_position(start_flows.inputs, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'flow % input must not be NULL', quote_literal(start_flows.flow_slug)
            USING ERRCODE = '22004';
    END IF;
    PERFORM flowworker._check_payloads(start_flows.inputs, NULL,
                                       format('the input of flow %L', start_flows.flow_slug),
                                       'max_input_bytes');
    SELECT s.step_slug INTO v_root_map FROM flowworker.steps s
    WHERE s.flow_slug = start_flows.flow_slug AND s.step_type = 'map' AND s.deps_count = 0
    LIMIT 1;
    IF v_root_map IS NOT NULL THEN
        SELECT jsonb_typeof(i) INTO v_kind FROM unnest(start_flows.inputs) AS i
        WHERE jsonb_typeof(i) <> 'array' LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'flow % maps step % over its input, which must be a JSON array, not %',
                quote_literal(start_flows.flow_slug), quote_literal(v_root_map), v_kind
                USING ERRCODE = '22023';
        END IF;
        SELECT c.value INTO v_max_tasks FROM flowworker.config c WHERE c.name = 'max_map_tasks';
        SELECT max(jsonb_array_length(i)) INTO v_width FROM unnest(start_flows.inputs) AS i;
        IF v_width > v_max_tasks THEN
            RAISE EXCEPTION 'flow % maps step % over its input: % elements, over the limit of %',
                quote_literal(start_flows.flow_slug), quote_literal(v_root_map), v_width,
                v_max_tasks
                USING ERRCODE = '22023',
                      HINT = 'raise it with UPDATE flowworker.config SET value = ... '
                             'WHERE name = ''max_map_tasks''';
        END IF;
    END IF;
    IF start_flows.run_ids IS NOT NULL
       AND cardinality(start_flows.run_ids) <> cardinality(start_flows.inputs) THEN
        RAISE EXCEPTION 'start_flows got % inputs and % run ids; give one run id per input',
            cardinality(start_flows.inputs), cardinality(start_flows.run_ids)
            USING ERRCODE = '22023';
    END IF;
    -- Ids in start order (_new_run_ids), one call for the batch; none made
    -- when the caller gave them all.
    IF start_flows.run_ids IS NULL OR array_position(start_flows.run_ids, NULL) IS NOT NULL THEN
        v_made := ARRAY(SELECT flowworker._new_run_ids(cardinality(start_flows.inputs)));
    END IF;
    v_ids := ARRAY(SELECT coalesce(x.run_id, v_made[x.ord])
                   FROM unnest(start_flows.inputs, start_flows.run_ids)
                            WITH ORDINALITY AS x(input, run_id, ord)
                   ORDER BY x.ord);
    SELECT count(*) INTO v_steps FROM flowworker.steps s WHERE s.flow_slug = start_flows.flow_slug;
    WITH inserted AS (
        INSERT INTO flowworker.runs AS r (run_id, flow_slug, input, remaining_steps)
        SELECT x.run_id, start_flows.flow_slug, x.input, v_steps
        FROM unnest(v_ids, start_flows.inputs) WITH ORDINALITY AS x(run_id, input, ord)
        ORDER BY x.ord
        ON CONFLICT (run_id) DO NOTHING
        RETURNING r.run_id
    )
    SELECT array_agg(i.run_id) INTO v_new FROM inserted i;
    -- A run id that was taken (before this call, or by an earlier input of
    -- it) by another flow or with another input is not this start's run.
    -- Checked after the insert, which waits for a concurrent start of the
    -- same id to commit.
    SELECT r.run_id, r.flow_slug, r.flow_slug <> start_flows.flow_slug AS other_flow INTO v_other
    FROM unnest(start_flows.run_ids, start_flows.inputs) AS x(run_id, input)
    JOIN flowworker.runs r ON r.run_id = x.run_id
    WHERE r.flow_slug <> start_flows.flow_slug OR r.input <> x.input
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % %', v_other.run_id, CASE WHEN v_other.other_flow
            THEN format('belongs to flow %L, not %L', v_other.flow_slug, start_flows.flow_slug)
            ELSE 'was started with another input' END
            USING ERRCODE = '23505',
                  HINT = 'a run id names one start; give each start its own run id';
    END IF;

    IF v_new IS NOT NULL THEN
        -- Root single steps start here, with their one task each: the common
        -- case skips writing the step twice and looking for ready steps.
        INSERT INTO flowworker.step_states (run_id, step_slug, flow_slug, remaining_deps,
                                            status, started_at, initial_tasks, remaining_tasks)
        SELECT n.run_id, s.step_slug, s.flow_slug, s.deps_count,
               CASE WHEN r.root THEN 'started' ELSE 'created' END,
               CASE WHEN r.root THEN now() END,
               CASE WHEN r.root THEN 1 END, CASE WHEN r.root THEN 1 END
        FROM unnest(v_new) WITH ORDINALITY AS n(run_id, ord)
        JOIN flowworker.steps s ON s.flow_slug = start_flows.flow_slug
        CROSS JOIN LATERAL (SELECT s.deps_count = 0 AND s.step_type = 'single' AS root) AS r
        ORDER BY n.ord, s.step_index;
        PERFORM flowworker._queue_tasks(
            start_flows.flow_slug, array_agg(n.run_id ORDER BY n.ord, s.step_index),
            array_agg(s.step_slug ORDER BY n.ord, s.step_index), array_agg(1),
            array_agg(coalesce(s.start_delay, 0) ORDER BY n.ord, s.step_index))
        FROM unnest(v_new) WITH ORDINALITY AS n(run_id, ord)
        JOIN flowworker.steps s ON s.flow_slug = start_flows.flow_slug
        WHERE s.deps_count = 0 AND s.step_type = 'single'
        HAVING count(*) > 0;
        INSERT INTO flowworker.events (run_id, event, actor)
        SELECT n.run_id, 'run.started', v_actor FROM unnest(v_new) AS n(run_id);
        IF v_steps = 0 THEN
            UPDATE flowworker.runs r SET status = 'completed', completed_at = now(), output = '{}'
            WHERE r.run_id = ANY (v_new);
        ELSIF EXISTS (SELECT 1 FROM flowworker.steps s
                      WHERE s.flow_slug = start_flows.flow_slug AND s.deps_count = 0
                        AND s.step_type <> 'single') THEN
            -- Root map steps (sized from the input) and root wait steps.
            PERFORM flowworker._start_ready_steps(v_new);
        END IF;
    END IF;
    RETURN QUERY
    SELECT r.* FROM unnest(v_ids) WITH ORDINALITY AS x(run_id, ord)
    JOIN flowworker.runs r ON r.run_id = x.run_id
    ORDER BY x.ord;
END;
$$;

-- Start one run: start_flows with one input (as fast as a one-run body of
-- its own, measured; so there is one implementation).
CREATE FUNCTION flowworker.start_flow(flow_slug text, input jsonb DEFAULT '{}', run_id uuid DEFAULT NULL)
RETURNS flowworker.runs
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT * FROM flowworker.start_flows(flow_slug, ARRAY[input], ARRAY[run_id]);
$$;
