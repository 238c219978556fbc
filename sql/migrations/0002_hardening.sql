-- 0002 hardening: what hostile input and hostile clients could do to the
-- workers (issue "Hostile input and hostile clients"). Breaks the claim
-- protocol of version-1 workers (every claim action now names its worker;
-- acknowledgements may answer 'busy'; a claim may leave the flow input for
-- the worker to fetch), so workers older than version 2 refuse to start
-- against it: stop them, migrate, start the new ones. Runs wait meanwhile;
-- nothing is lost.

-- ---------- Which workers may run against this schema ----------
ALTER TABLE flowworker.migrations ADD COLUMN min_worker_version int NOT NULL DEFAULT 1;

-- ---------- New limits ----------
INSERT INTO flowworker.config (name, value, description) VALUES
    ('max_map_tasks', 100000,
     'Most tasks one map step may start; a wider map fails its run (default 100,000).'),
    ('max_map_output_bytes', 16777216,
     'Largest combined output of a map step, in bytes of jsonb; a larger one fails its run '
     '(default 16 MiB).');

-- ---------- Option bounds (existing definitions are brought within them) ----------
UPDATE flowworker.flows SET max_attempts = least(max_attempts, 1000),
    base_delay = least(base_delay, 86400), timeout = least(timeout, 604800)
WHERE max_attempts > 1000 OR base_delay > 86400 OR timeout > 604800;
UPDATE flowworker.steps SET max_attempts = least(max_attempts, 1000),
    base_delay = least(base_delay, 86400), timeout = least(timeout, 604800),
    start_delay = least(start_delay, 2592000)
WHERE max_attempts > 1000 OR base_delay > 86400 OR timeout > 604800 OR start_delay > 2592000;
ALTER TABLE flowworker.flows
    DROP CONSTRAINT flows_max_attempts_check,
    DROP CONSTRAINT flows_base_delay_check,
    DROP CONSTRAINT flows_timeout_check,
    ADD CONSTRAINT flows_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
    ADD CONSTRAINT flows_base_delay_check CHECK (base_delay BETWEEN 0 AND 86400),
    ADD CONSTRAINT flows_timeout_check CHECK (timeout BETWEEN 1 AND 604800);
ALTER TABLE flowworker.steps
    DROP CONSTRAINT steps_max_attempts_check,
    DROP CONSTRAINT steps_base_delay_check,
    DROP CONSTRAINT steps_timeout_check,
    DROP CONSTRAINT steps_start_delay_check,
    ADD CONSTRAINT steps_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
    ADD CONSTRAINT steps_base_delay_check CHECK (base_delay BETWEEN 0 AND 86400),
    ADD CONSTRAINT steps_timeout_check CHECK (timeout BETWEEN 1 AND 604800),
    ADD CONSTRAINT steps_start_delay_check CHECK (start_delay BETWEEN 0 AND 2592000);

-- ---------- A map task keeps its element ----------
ALTER TABLE flowworker.step_tasks ADD COLUMN input jsonb;
UPDATE flowworker.step_tasks t
SET input = CASE WHEN s.deps_count = 0 THEN r.input ELSE (
        SELECT ss.output FROM flowworker.deps d
        JOIN flowworker.step_states ss ON ss.run_id = t.run_id AND ss.step_slug = d.dep_slug
        WHERE d.flow_slug = t.flow_slug AND d.step_slug = t.step_slug) END -> t.task_index
FROM flowworker.steps s, flowworker.runs r
WHERE s.flow_slug = t.flow_slug AND s.step_slug = t.step_slug AND s.step_type = 'map'
  AND r.run_id = t.run_id AND t.status IN ('queued', 'started');

-- ---------- Functions ----------
DROP FUNCTION flowworker._check_size(jsonb, text, text);
DROP FUNCTION flowworker._queue_tasks(text, uuid[], text[], int[], int[]);
DROP FUNCTION flowworker.start_tasks(text, uuid, int, int);
DROP FUNCTION flowworker.fail_task(uuid, text, int, int, text);
DROP FUNCTION flowworker.release_tasks(uuid[], text[], int[], int[], uuid[]);
DROP FUNCTION flowworker.extend_claims(text, uuid[], text[], int[], int[], int);
DROP FUNCTION flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[]);
DROP FUNCTION flowworker.complete_task(uuid, text, int, int, jsonb);
DROP FUNCTION flowworker.create_flow(text, int, int, int);
DROP FUNCTION flowworker.add_step(text, text, text[], int, int, int, int, text);
DROP FUNCTION flowworker._start_ready_steps(uuid[]);
DROP FUNCTION flowworker.start_flows(text, jsonb[], uuid[]);

-- Refuse the first payload over the configured size limit, or holding a
-- number that is tiny as jsonb and huge as text: 1e131071 is stored in a
-- few bytes and read back as 131,072 digits, so a few kilobytes of input
-- would become tens of megabytes at every claim (and 1e5000 is more digits
-- than Python's JSON decoder takes). Numbers must fit a double's range:
-- zero, or a magnitude between 1e-308 and 1e308.
-- p_what names a payload: a format with one %L filled from p_names (e.g.
-- 'the output of step %L' and the step slugs), or a plain text when
-- p_names is NULL.
CREATE FUNCTION flowworker._check_payloads(
    p_payloads jsonb[], p_names text[], p_what text, p_limit_name text
)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
    v_limit bigint;
    v_bad pg_catalog.record;
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = p_limit_name;
    SELECT x.name, pg_column_size(x.payload) AS size INTO v_bad
    FROM unnest(p_payloads, p_names) AS x(payload, name)
    WHERE pg_column_size(x.payload) > v_limit
       OR jsonb_path_exists(x.payload, 'strict $.** ? (@.type() == "number" && '
                            '(@ > 1e308 || @ < -1e308 || (@ != 0 && @ < 1e-308 && @ > -1e-308)))')
    LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_bad.size > v_limit THEN
        RAISE EXCEPTION '% is % bytes, over the limit of % bytes', format(p_what, v_bad.name),
            v_bad.size, v_limit
            USING ERRCODE = '54000',
                  HINT = format('raise it with UPDATE flowworker.config SET value = ... '
                                'WHERE name = %L', p_limit_name);
    END IF;
    RAISE EXCEPTION '% holds a number beyond the limit: JSON numbers must be 0 or between '
                    '1e-308 and 1e308 in magnitude', format(p_what, v_bad.name)
        USING ERRCODE = '22003',
              HINT = 'such numbers grow to thousands of digits as text; send them as strings';
END;
$$;

-- Refuse flow and step options outside their bounds, naming the option:
-- the tables' CHECKs say the same, less clearly. A value beyond them
-- (a timeout of 2^31-1, say) would pass a bare CHECK and then make every
-- claim of the flow fail with integer overflow. NULL means "not given".
CREATE FUNCTION flowworker._check_options(
    p_where text, p_max_attempts int, p_base_delay int, p_timeout int, p_start_delay int
)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = ''
AS $$
DECLARE
    v_option pg_catalog.record;
BEGIN
    FOR v_option IN
        SELECT * FROM (VALUES ('max_attempts', p_max_attempts, 1, 1000),
                              ('base_delay', p_base_delay, 0, 86400),
                              ('timeout', p_timeout, 1, 604800),
                              ('start_delay', p_start_delay, 0, 2592000)) AS o(name, value, low, high)
        WHERE o.value NOT BETWEEN o.low AND o.high
    LOOP
        RAISE EXCEPTION '%: % must be between % and %, not %', p_where, v_option.name,
            v_option.low, v_option.high, v_option.value
            USING ERRCODE = '22023';
    END LOOP;
END;
$$;

-- Lock a run's row, waiting for it a short while (50 ms) at most: long
-- enough for another worker's acknowledgement of the same run to commit,
-- short enough that an application transaction holding the row (cancel_run,
-- then slow work) does not hold up the caller. False when it is still held.
CREATE FUNCTION flowworker._lock_run_briefly(p_run_id uuid)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_before pg_catalog.text := pg_catalog.current_setting('lock_timeout');
BEGIN
    PERFORM pg_catalog.set_config('lock_timeout', '50ms', true);
    PERFORM 1 FROM flowworker.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    PERFORM pg_catalog.set_config('lock_timeout', v_before, true);
    RETURN true;
EXCEPTION WHEN lock_not_available THEN
    RETURN false;  -- the failed block undid the setting too
END;
$$;

-- Define a flow and its queue. Idempotent: options are updated in place,
-- the shape (steps, deps, types) is defined by add_step.
CREATE FUNCTION flowworker.create_flow(
    flow_slug text,
    max_attempts int DEFAULT 3,
    base_delay int DEFAULT 1,
    timeout int DEFAULT 60
)
RETURNS flowworker.flows
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_flow flowworker.flows;
BEGIN
    PERFORM flowworker.check_slug(create_flow.flow_slug, 'flow slug');
    PERFORM flowworker._check_options(format('flow %L', create_flow.flow_slug),
                                      create_flow.max_attempts, create_flow.base_delay,
                                      create_flow.timeout, NULL);
    INSERT INTO flowworker.flows AS f (flow_slug, max_attempts, base_delay, timeout)
    VALUES (create_flow.flow_slug, create_flow.max_attempts, create_flow.base_delay,
            create_flow.timeout)
    ON CONFLICT (flow_slug) DO UPDATE
        SET max_attempts = excluded.max_attempts,
            base_delay = excluded.base_delay,
            timeout = excluded.timeout
        WHERE (f.max_attempts, f.base_delay, f.timeout)
              IS DISTINCT FROM (excluded.max_attempts, excluded.base_delay, excluded.timeout)
    RETURNING * INTO v_flow;
    IF NOT FOUND THEN
        SELECT * INTO v_flow FROM flowworker.flows f WHERE f.flow_slug = create_flow.flow_slug;
    END IF;
    PERFORM flowworker.queue_create(create_flow.flow_slug);
    RETURN v_flow;
END;
$$;

-- Add a step to a flow. Re-adding the same step is a no-op (options are
-- updated); a different type or deps under an existing step slug is an
-- error, and so is a new step in a flow that already has runs.
CREATE FUNCTION flowworker.add_step(
    flow_slug text,
    step_slug text,
    deps text[] DEFAULT '{}',
    max_attempts int DEFAULT NULL,
    base_delay int DEFAULT NULL,
    timeout int DEFAULT NULL,
    start_delay int DEFAULT NULL,
    step_type text DEFAULT 'single'
)
RETURNS flowworker.steps
LANGUAGE plpgsql
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_step flowworker.steps;
    v_deps pg_catalog.text[] := ARRAY(SELECT DISTINCT d FROM unnest(coalesce(add_step.deps, '{}')) d ORDER BY d);
    v_old_deps pg_catalog.text[];
    v_missing pg_catalog.text;
BEGIN
    PERFORM flowworker.check_slug(add_step.flow_slug, 'flow slug');
    PERFORM flowworker.check_slug(add_step.step_slug, 'step slug');
    PERFORM flowworker.check_slug(d, 'dependency slug') FROM unnest(v_deps) d;
    PERFORM flowworker._check_options(format('step %s.%s', add_step.flow_slug, add_step.step_slug),
                                      add_step.max_attempts, add_step.base_delay,
                                      add_step.timeout, add_step.start_delay);
    IF add_step.step_type IS NULL OR add_step.step_type NOT IN ('single', 'map') THEN
        RAISE EXCEPTION 'step %.%: step_type must be single or map, not %',
            add_step.flow_slug, add_step.step_slug, coalesce(add_step.step_type, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF add_step.step_type = 'map' AND cardinality(v_deps) > 1 THEN
        RAISE EXCEPTION 'map step %.% has % deps; a map step has at most one',
            add_step.flow_slug, add_step.step_slug, cardinality(v_deps) USING ERRCODE = '22023';
    END IF;
    -- Serialise definitions of one flow, so concurrent migrations agree.
    PERFORM 1 FROM flowworker.flows f WHERE f.flow_slug = add_step.flow_slug FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow % does not exist; call create_flow first', quote_literal(add_step.flow_slug)
            USING ERRCODE = 'P0002';
    END IF;

    SELECT * INTO v_step FROM flowworker.steps s
    WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug;
    IF FOUND THEN
        v_old_deps := ARRAY(SELECT d.dep_slug FROM flowworker.deps d
                            WHERE d.flow_slug = add_step.flow_slug AND d.step_slug = add_step.step_slug
                            ORDER BY d.dep_slug);
        IF v_step.step_type <> add_step.step_type THEN
            RAISE EXCEPTION 'flow % changed shape: step % is % in the database, % in the definition',
                quote_literal(add_step.flow_slug), quote_literal(add_step.step_slug),
                v_step.step_type, add_step.step_type
                USING ERRCODE = '22023', HINT = 'give the changed flow a new slug';
        END IF;
        IF v_old_deps <> v_deps THEN
            RAISE EXCEPTION 'flow % changed shape: step % depends on {%} in the database, {%} in the definition',
                quote_literal(add_step.flow_slug), quote_literal(add_step.step_slug),
                array_to_string(v_old_deps, ','), array_to_string(v_deps, ',')
                USING ERRCODE = '22023', HINT = 'give the changed flow a new slug';
        END IF;
        UPDATE flowworker.steps s
        SET max_attempts = add_step.max_attempts, base_delay = add_step.base_delay,
            timeout = add_step.timeout, start_delay = add_step.start_delay
        WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug
          AND (s.max_attempts, s.base_delay, s.timeout, s.start_delay) IS DISTINCT FROM
              (add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay)
        RETURNING * INTO v_step;
        IF NOT FOUND THEN
            SELECT * INTO v_step FROM flowworker.steps s
            WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug;
        END IF;
        RETURN v_step;
    END IF;

    IF EXISTS (SELECT 1 FROM flowworker.runs r WHERE r.flow_slug = add_step.flow_slug) THEN
        RAISE EXCEPTION 'flow % changed shape: step % is new, but the flow already has runs',
            quote_literal(add_step.flow_slug), quote_literal(add_step.step_slug)
            USING ERRCODE = '22023', HINT = 'give the changed flow a new slug';
    END IF;
    SELECT d INTO v_missing FROM unnest(v_deps) d
    WHERE NOT EXISTS (SELECT 1 FROM flowworker.steps s
                      WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = d)
    LIMIT 1;
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'step %.% depends on unknown step %', add_step.flow_slug,
            add_step.step_slug, quote_literal(v_missing) USING ERRCODE = '22023';
    END IF;

    INSERT INTO flowworker.steps AS s (flow_slug, step_slug, step_type, step_index, deps_count,
                                       max_attempts, base_delay, timeout, start_delay)
    SELECT add_step.flow_slug, add_step.step_slug, add_step.step_type,
           coalesce(max(s2.step_index) + 1, 0), cardinality(v_deps),
           add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay
    FROM flowworker.steps s2 WHERE s2.flow_slug = add_step.flow_slug
    RETURNING * INTO v_step;
    INSERT INTO flowworker.deps (flow_slug, dep_slug, step_slug)
    SELECT add_step.flow_slug, d, add_step.step_slug FROM unnest(v_deps) d;
    RETURN v_step;
END;
$$;

-- Create steps' tasks and one message per task, for many steps of one flow:
-- p_counts[i] tasks of step p_step_slugs[i] in run p_run_ids[i], visible
-- after p_delays[i] seconds. A map step's array is p_sources[i] (NULL for a
-- single step): each task keeps its own element, so that a claim reads that
-- and not the whole array. The tasks are static SQL (planned once); the
-- queue insert is the one dynamic statement, kept trivial to plan.
CREATE FUNCTION flowworker._queue_tasks(
    p_flow_slug text, p_run_ids uuid[], p_step_slugs text[], p_counts int[], p_delays int[],
    p_sources jsonb[] DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
-- Called for one run (start_flow) or hundreds (ack_tasks): a custom plan
-- for each array would be planned anew on every call. The one generic plan
-- may be made while the tables are small, so it is held to what is right at
-- any size: rows reached by key, joined by nested loops.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    q pg_catalog.text := 'q_' || flowworker.check_slug(p_flow_slug, 'flow slug');
    v_seq pg_catalog.regclass := format('flowworker.%I', q || '$seq')::pg_catalog.regclass;
    v_msg_ids bigint[];
    v_vts pg_catalog.timestamptz[];
    v_messages pg_catalog.jsonb[];
    v_delays pg_catalog.jsonb;
BEGIN
    -- A step's start delay is the same in every run: look it up by step.
    SELECT jsonb_object_agg(x.step_slug, x.delay) INTO v_delays
    FROM unnest(p_step_slugs, p_delays) AS x(step_slug, delay);
    WITH t AS (
        INSERT INTO flowworker.step_tasks (run_id, step_slug, task_index, flow_slug, message_id,
                                           input)
        SELECT x.run_id, x.step_slug, i, p_flow_slug, nextval(v_seq), x.source -> i
        FROM unnest(p_run_ids, p_step_slugs, p_counts, p_sources)
                 WITH ORDINALITY AS x(run_id, step_slug, n, source, ord),
             generate_series(0, x.n - 1) AS i
        ORDER BY x.ord, i
        RETURNING run_id, step_slug, task_index, message_id
    )
    SELECT array_agg(t.message_id ORDER BY t.message_id),
           array_agg(now() + make_interval(secs => (v_delays ->> t.step_slug)::int)
                     ORDER BY t.message_id),
           array_agg(jsonb_build_object('run_id', t.run_id, 'step_slug', t.step_slug,
                                        'task_index', t.task_index) ORDER BY t.message_id)
    INTO v_msg_ids, v_vts, v_messages
    FROM t;
    EXECUTE format('INSERT INTO flowworker.%I (msg_id, vt, message) SELECT * FROM unnest($1, $2, $3)', q)
        USING v_msg_ids, v_vts, v_messages;
    IF EXISTS (SELECT 1 FROM unnest(p_delays) AS d WHERE d <= 0) THEN
        PERFORM flowworker.queue_notify(p_flow_slug);
    END IF;
END;
$$;

-- Start every step of these runs whose deps are all complete: queue its
-- tasks, or complete it at once when it maps over an empty array (which
-- may make more steps ready, hence the loop). A map step whose source is
-- not an array, or is wider than max_map_tasks, fails its run. Set-based: a batch of acknowledgements
-- starts the next steps of all its runs in a few statements. The caller
-- holds the run locks.
CREATE FUNCTION flowworker._start_ready_steps(p_run_ids uuid[])
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
-- Called for one run (start_flow) or hundreds (ack_tasks): a custom plan
-- for each array would be planned anew on every call. The one generic plan
-- may be made while the tables are small, so it is held to what is right at
-- any size: rows reached by key, joined by nested loops.
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
               array_agg(y.source ORDER BY y.run_id, y.step_index) AS sources
        INTO v_ready
        FROM (
            SELECT x.*, CASE WHEN NOT x.is_map THEN 1
                             WHEN jsonb_typeof(x.source) = 'array'
                             THEN jsonb_array_length(x.source) END AS n
            FROM (
                SELECT ss.run_id, ss.step_slug, ss.flow_slug, s.step_index,
                       coalesce(s.start_delay, 0) AS delay, s.step_type = 'map' AS is_map,
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
                        'map step %s expects an array from %s, got %s', v_bad.step_slug,
                        coalesce(v_bad.dep_slug, 'the flow input'),
                        coalesce(jsonb_typeof(flowworker._map_source(v_bad.run, v_bad.step)),
                                 'null'))
                    ELSE format('map step %s would start %s tasks, over the limit of %s '
                                '(flowworker.config max_map_tasks)', v_bad.step_slug, v_bad.n,
                                v_max_tasks) END);
            END LOOP;
            CONTINUE;  -- the ready steps again, those of the failed runs left out
        END IF;

        UPDATE flowworker.step_states ss
        SET status = 'started', started_at = now(), initial_tasks = x.n, remaining_tasks = x.n
        FROM unnest(v_ready.runs, v_ready.steps, v_ready.counts) AS x(run_id, step_slug, n)
        WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug;

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
        FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts)
                 AS x(run_id, step_slug, flow_slug, n)
        WHERE x.n = 0
        HAVING count(*) > 0;
        v_runs := coalesce(v_runs, '{}');
    END LOOP;
END;
$$;

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
            'map step %s: the outputs of its %s tasks add up to %s bytes, over the limit of %s '
            'bytes (flowworker.config max_map_output_bytes)',
            v_big.step_slug, v_big.tasks, v_big.bytes, v_limit));
    END LOOP;
    SELECT array_agg(x.run_id), array_agg(x.step_slug), array_agg(x.flow_slug),
           array_agg(o.output)
    INTO runs, steps, flows, outputs
    FROM unnest(p_run_ids, p_step_slugs, p_flow_slugs) AS x(run_id, step_slug, flow_slug)
    JOIN flowworker.runs r ON r.run_id = x.run_id AND r.status = 'started'
    CROSS JOIN LATERAL (SELECT jsonb_agg(t.output ORDER BY t.task_index) AS output
                        FROM flowworker.step_tasks t
                        WHERE t.run_id = x.run_id AND t.step_slug = x.step_slug) AS o;
END;
$$;

-- Claim up to batch_size visible tasks of a flow for a worker.
--
-- Each claim counts an attempt; the attempt number is the claim token that
-- complete_task and fail_task check. A message whose claim expired (its
-- worker died) is visible again and is re-claimed here with attempt + 1, or
-- fails its task and run once max_attempts claims were spent. Messages that
-- point at nothing claimable are archived, so garbage never loops.
-- The claim stays hidden for the task timeout + grace_seconds (1 s to an hour).
--
-- Per task it returns the handler input: a map task's own element, a root
-- step's flow input, a dependent step's {dep: output}. The flow input comes
-- along only when the handler input is not it already and it is small
-- (8 KiB); otherwise fetch_flow_input tells the worker to read it from the
-- run (once per run: a map over a large input must not send it with every
-- element).
CREATE FUNCTION flowworker.start_tasks(
    flow_slug text, worker_id uuid, batch_size int DEFAULT 10, grace_seconds int DEFAULT 5
)
RETURNS TABLE (
    msg_id bigint, run_id uuid, step_slug text, task_index int, attempt int,
    input jsonb, flow_input jsonb, fetch_flow_input boolean, timeout int, isolated boolean
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Every statement here reaches its rows by key. Plans are cached per
-- session: one made while the tables were small (a new install, a worker
-- started before the load) would scan them whole for as long as the
-- session lives, so scans are ruled out; and a batch joins ~100 rows to
-- the hot, cached tables, which the default random_page_cost prices as
-- dearer than a scan. One generic plan, as in ack_tasks: the batch size
-- changes from call to call, and a custom plan for each would be planned anew.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET random_page_cost = 1.1
AS $$
#variable_conflict use_column
DECLARE
    q pg_catalog.text := 'q_' || flowworker.check_slug(start_tasks.flow_slug, 'flow slug');
    v_msg_ids bigint[];
    v_ptrs pg_catalog.jsonb[];
    v_msg_tids pg_catalog.tid[];
    v_locked flowworker.task_claim[];
    v_orphans bigint[];
    v_exhausted flowworker.task_claim;
    v_lost boolean := false;
BEGIN
    -- ---------- GUARD: sane claim sizes and spans ----------
    -- A negative grace would make a claim visible again at once, and spend
    -- the task's attempts on every call.
    IF grace_seconds IS NULL OR grace_seconds NOT BETWEEN 1 AND 3600
       OR batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'start_tasks: grace_seconds must be 1..3600 and batch_size 1..10000, not % and %',
            grace_seconds, batch_size USING ERRCODE = '22023';
    END IF;

    -- ---------- Visible messages, locked ----------
    EXECUTE format(
        'SELECT array_agg(m.msg_id), array_agg(m.message), array_agg(m.ctid)
         FROM (SELECT msg_id, message, ctid FROM flowworker.%I
               WHERE vt <= now() ORDER BY vt, msg_id LIMIT $1
               FOR UPDATE SKIP LOCKED) m', q)
        INTO v_msg_ids, v_ptrs, v_msg_tids USING batch_size;
    IF v_msg_ids IS NULL THEN
        RETURN;
    END IF;

    -- Lock the unfinished tasks these messages point at; skip any being
    -- written right now. Each task is looked up from its message (LATERAL),
    -- whatever the planner thinks of the table's size: a plan cached while
    -- the flow had few tasks must not scan them all once it has many.
    SELECT array_agg(l) INTO v_locked
    FROM (
        SELECT t.run_id, t.step_slug, t.task_index, m.msg_id, t.status, t.attempts_count,
               coalesce(s.max_attempts, f.max_attempts), coalesce(s.timeout, f.timeout),
               t.tid, m.tid
        FROM unnest(v_msg_ids, v_ptrs, v_msg_tids) AS m(msg_id, ptr, tid)
        CROSS JOIN LATERAL (
            SELECT t.run_id, t.step_slug, t.task_index, t.status, t.attempts_count,
                   t.ctid AS tid
            FROM flowworker.step_tasks t
            WHERE t.flow_slug = start_tasks.flow_slug AND t.message_id = m.msg_id
              AND t.status IN ('queued', 'started')
              AND jsonb_typeof(m.ptr) = 'object'
              AND t.run_id::pg_catalog.text = m.ptr ->> 'run_id'
              AND t.step_slug = m.ptr ->> 'step_slug'
              AND t.task_index::pg_catalog.text = m.ptr ->> 'task_index'
            FOR UPDATE SKIP LOCKED
        ) AS t
        JOIN flowworker.steps s ON s.flow_slug = start_tasks.flow_slug AND s.step_slug = t.step_slug
        JOIN flowworker.flows f ON f.flow_slug = start_tasks.flow_slug
    ) AS l(run_id, step_slug, task_index, msg_id, status, attempts_count, max_attempts, timeout,
           task_tid, msg_tid);

    -- Messages with no unfinished task behind them are garbage or duplicates
    -- (only a message whose task was not locked above can be one).
    IF coalesce(cardinality(v_locked), 0) < cardinality(v_msg_ids) THEN
        SELECT array_agg(m.msg_id) INTO v_orphans
        FROM unnest(v_msg_ids, v_ptrs) AS m(msg_id, ptr)
        WHERE NOT EXISTS (SELECT 1 FROM unnest(v_locked) c WHERE c.msg_id = m.msg_id)
          AND NOT EXISTS (
            SELECT 1 FROM flowworker.step_tasks t
            WHERE t.message_id = m.msg_id AND t.flow_slug = start_tasks.flow_slug
              AND t.status IN ('queued', 'started')
              AND jsonb_typeof(m.ptr) = 'object'
              AND t.run_id::pg_catalog.text = m.ptr ->> 'run_id'
              AND t.step_slug = m.ptr ->> 'step_slug'
              AND t.task_index::pg_catalog.text = m.ptr ->> 'task_index');
        IF v_orphans IS NOT NULL THEN
            PERFORM flowworker.queue_archive(start_tasks.flow_slug, v_orphans);
        END IF;
    END IF;
    IF v_locked IS NULL THEN
        RETURN;
    END IF;

    -- Claims that expired on their last attempt fail their task and run.
    FOR v_exhausted IN
        SELECT * FROM unnest(v_locked) c WHERE c.attempts_count >= c.max_attempts
    LOOP
        PERFORM flowworker._fail_lost_task(v_exhausted);
        v_lost := true;
    END LOOP;

    IF v_lost THEN
        -- A lost task above may have failed its run and cancelled tasks locked here.
        SELECT array_agg(c) INTO v_locked FROM unnest(v_locked) c
        WHERE c.attempts_count < c.max_attempts
          AND EXISTS (SELECT 1 FROM flowworker.step_tasks t
                      WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug
                        AND t.task_index = c.task_index AND t.status = c.status);
        IF v_locked IS NULL THEN
            RETURN;
        END IF;
    END IF;
    -- A task whose worker was lost twice may be what kills workers (a poison
    -- task): claim it alone, and the worker runs it alone, so that if it kills
    -- the next worker too it takes nothing else along. (Once lost is common:
    -- a crash, a deploy; those tasks are re-claimed together as usual.)
    IF EXISTS (SELECT 1 FROM unnest(v_locked) c
               WHERE c.status = 'started' AND c.attempts_count >= 2) THEN
        SELECT ARRAY[c] INTO v_locked FROM unnest(v_locked) c
        WHERE c.status = 'started' AND c.attempts_count >= 2 ORDER BY c.msg_id LIMIT 1;
    END IF;

    EXECUTE format(
        'UPDATE flowworker.%I q
         SET vt = now() + make_interval(secs => c.timeout + $2), read_ct = q.read_ct + 1
         FROM unnest($1) c WHERE q.ctid = c.msg_tid', q)
        USING v_locked, grace_seconds;

    RETURN QUERY
    WITH claimed AS (
        UPDATE flowworker.step_tasks t
        SET status = 'started', attempts_count = t.attempts_count + 1, started_at = now(),
            worker_id = start_tasks.worker_id,
            error_message = CASE WHEN t.status = 'started'
                                 THEN 'claim expired: the worker running attempt '
                                      || t.attempts_count || ' was lost'
                                 ELSE t.error_message END
        FROM unnest(v_locked) c
        WHERE t.ctid = c.task_tid
        RETURNING t.run_id, t.step_slug, t.task_index, t.flow_slug, t.attempts_count, c.msg_id,
                  t.input, c.timeout, c.status = 'started' AND c.attempts_count >= 2 AS isolated
    )
    SELECT c.msg_id, c.run_id, c.step_slug, c.task_index, c.attempts_count,
           CASE
               WHEN s.step_type = 'map' THEN c.input
               WHEN s.deps_count = 0 THEN r.input
               ELSE (
                   SELECT jsonb_object_agg(d.dep_slug, ss.output)
                   FROM flowworker.deps d
                   JOIN flowworker.step_states ss ON ss.run_id = c.run_id AND ss.step_slug = d.dep_slug
                   WHERE d.flow_slug = c.flow_slug AND d.step_slug = c.step_slug)
           END,
           CASE WHEN NOT x.input_is_flow_input AND NOT x.large THEN r.input END,
           NOT x.input_is_flow_input AND x.large,
           c.timeout, c.isolated
    FROM claimed c
    JOIN flowworker.runs r ON r.run_id = c.run_id
    JOIN flowworker.steps s ON s.flow_slug = c.flow_slug AND s.step_slug = c.step_slug
    -- pg_column_size reads a stored value's size without decompressing it.
    CROSS JOIN LATERAL (SELECT s.step_type = 'single' AND s.deps_count = 0 AS input_is_flow_input,
                               pg_column_size(r.input) > 8192 AS large) AS x
    ORDER BY c.msg_id;
END;
$$;

-- Record a failed attempt under its claim: the attempt number and the
-- worker holding it (a guessed attempt number from another worker login
-- changes nothing). Returns 'retry' when the task is queued again (visible
-- after the backoff delay), 'failed' when attempts are exhausted and the run
-- failed, 'stale' when the claim is no longer current.
-- The error text is stored with every failed attempt, so a huge one is cut
-- to 8,192 characters and a note of how many were cut, as the worker cuts an
-- exception's text (a text the worker already cut is left as it is).
CREATE FUNCTION flowworker.fail_task(
    run_id uuid, step_slug text, task_index int, attempt int, error_message text,
    worker_id uuid DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- By key only: a plan cached while the tables were small must not scan them
-- whole once they are large (see start_tasks).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_flow_slug pg_catalog.text;
    v_task flowworker.step_tasks;
    v_max_attempts int;
    v_base_delay int;
    c_keep CONSTANT int := 8192;  -- executor.MAX_ERROR_CHARS
    v_error pg_catalog.text := CASE
        WHEN pg_catalog.length(fail_task.error_message) > c_keep + 100
        THEN pg_catalog.left(fail_task.error_message, c_keep) || '... ['
             || (pg_catalog.length(fail_task.error_message) - c_keep) || ' more characters cut]'
        ELSE fail_task.error_message END;
BEGIN
    IF fail_task.worker_id IS NULL THEN
        RAISE EXCEPTION 'fail_task needs the worker_id that holds the claim'
            USING ERRCODE = '22004';
    END IF;
    SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
    WHERE r.run_id = fail_task.run_id AND r.status = 'started' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    SELECT * INTO v_task FROM flowworker.step_tasks t
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index
      AND t.status = 'started' AND t.attempts_count = fail_task.attempt
      AND t.worker_id = fail_task.worker_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    SELECT coalesce(s.max_attempts, f.max_attempts), coalesce(s.base_delay, f.base_delay)
    INTO v_max_attempts, v_base_delay
    FROM flowworker.steps s JOIN flowworker.flows f ON f.flow_slug = s.flow_slug
    WHERE s.flow_slug = v_flow_slug AND s.step_slug = fail_task.step_slug;

    IF v_task.attempts_count < v_max_attempts THEN
        UPDATE flowworker.step_tasks t
        SET status = 'queued', error_message = v_error
        WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index;
        PERFORM flowworker.queue_set_vt(v_flow_slug, ARRAY[v_task.message_id],
            flowworker.retry_delay(v_base_delay, v_task.attempts_count));
        RETURN 'retry';
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', error_message = v_error, failed_at = now()
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[v_task.message_id]);
    PERFORM flowworker._fail_run(fail_task.run_id, fail_task.step_slug, v_error);
    RETURN 'failed';
END;
$$;

-- Hand claimed tasks back for immediate redelivery without spending an
-- attempt (graceful shutdown). Only claims that are still current and held
-- by the worker named for each are released: a retried release cannot hand
-- back the claim another worker has since taken with the same attempt
-- number, nor one worker login another's. Returns how many were. A task
-- whose run another transaction holds for longer than a moment is left
-- claimed (it is redelivered when the claim expires): a shutdown must not
-- wait on an application.
CREATE FUNCTION flowworker.release_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    worker_ids uuid[]
)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- By key only: a plan cached while the tables were small must not scan them
-- whole once they are large (see start_tasks).
SET enable_seqscan = off
AS $$
DECLARE
    v_released int := 0;
    v_task pg_catalog.record;
    v_flow_slug pg_catalog.text;
    v_message_id bigint;
BEGIN
    IF worker_ids IS NULL OR cardinality(worker_ids) <> cardinality(run_ids)
       OR array_position(worker_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'release_tasks needs the worker_id holding each claim'
            USING ERRCODE = '22004';
    END IF;
    -- One task at a time, each under its run lock, in the lock order.
    FOR v_task IN
        SELECT * FROM unnest(run_ids, step_slugs, task_indexes, attempts, worker_ids)
            AS c(run_id, step_slug, task_index, attempt, worker_id)
        ORDER BY c.run_id, c.step_slug, c.task_index
    LOOP
        CONTINUE WHEN NOT flowworker._lock_run_briefly(v_task.run_id);
        UPDATE flowworker.step_tasks t
        SET status = 'queued', attempts_count = t.attempts_count - 1
        WHERE t.run_id = v_task.run_id AND t.step_slug = v_task.step_slug
          AND t.task_index = v_task.task_index
          AND t.status = 'started' AND t.attempts_count = v_task.attempt
          AND t.worker_id = v_task.worker_id
        RETURNING t.flow_slug, t.message_id INTO v_flow_slug, v_message_id;
        IF FOUND THEN
            PERFORM flowworker.queue_set_vt(v_flow_slug, ARRAY[v_message_id], 0);
            v_released := v_released + 1;
        END IF;
    END LOOP;
    RETURN v_released;
END;
$$;

-- Keep current claims hidden for another `seconds` (at most the longest
-- claim span: a week's timeout and an hour's grace), for tasks still running.
-- A claim is its attempt number and the worker holding it. Returns how many
-- claims were still current.
CREATE FUNCTION flowworker.extend_claims(
    flow_slug text, run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    seconds int, worker_ids uuid[]
)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- By key only: a plan cached while the tables were small must not scan them
-- whole once they are large (see start_tasks).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_msg_ids bigint[];
BEGIN
    IF worker_ids IS NULL OR cardinality(worker_ids) <> cardinality(run_ids)
       OR array_position(worker_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'extend_claims needs the worker_id holding each claim'
            USING ERRCODE = '22004';
    END IF;
    IF seconds IS NULL OR seconds NOT BETWEEN 1 AND 608400 THEN
        RAISE EXCEPTION 'extend_claims: seconds must be between 1 and 608400, not %', seconds
            USING ERRCODE = '22023';
    END IF;
    -- Lock the tasks, so that a re-claim by start_tasks in flight right now
    -- is waited for and its new attempt seen: an expired claim another worker
    -- takes meanwhile is not reported as still current. Their runs are
    -- shared first, in run order, as every writer locks run, task, message;
    -- then only start_tasks, which never waits, can hold a task lock here.
    PERFORM 1 FROM flowworker.runs r WHERE r.run_id = ANY (extend_claims.run_ids)
    ORDER BY r.run_id FOR SHARE;
    SELECT array_agg(x.message_id) INTO v_msg_ids
    FROM (
        SELECT t.message_id
        FROM unnest(run_ids, step_slugs, task_indexes, attempts, worker_ids)
                 AS c(run_id, step_slug, task_index, attempt, worker_id)
        JOIN flowworker.step_tasks t
          ON t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index
        WHERE t.flow_slug = extend_claims.flow_slug
          AND t.status = 'started' AND t.attempts_count = c.attempt
          AND t.worker_id = c.worker_id
        ORDER BY t.run_id, t.step_slug, t.task_index
        FOR UPDATE OF t
    ) AS x;
    IF v_msg_ids IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format(
        'UPDATE flowworker.%I SET vt = greatest(vt, now() + make_interval(secs => $2))
         WHERE msg_id = ANY($1)', 'q_' || flowworker.check_slug(extend_claims.flow_slug, 'flow slug'))
        USING v_msg_ids, seconds;
    RETURN cardinality(v_msg_ids);
END;
$$;

-- Apply many outcomes in one call: an output completes a task, an error
-- fails the attempt (fail_task). Each outcome names its claim: the attempt
-- number and the worker holding it. Returns, per input position (1-based):
--   'completed'  the output is recorded (also for a repeated completion of
--                a claim that was already applied, its reply lost);
--   'retry'      the attempt failed and the task is queued again;
--   'failed'     the attempt failed, the task's attempts are spent, its run failed;
--   'stale'      the claim is no longer current (or never was this worker's);
--   'busy'       another transaction holds the run's row: nothing was
--                written, send the outcome again later.
-- Runs are locked in run_id order, skipping the ones held elsewhere, then
-- waiting for those a moment each: an application transaction that holds
-- one run (cancel_run, then slow work) must not hold up the outcomes of
-- every other run, while two workers acknowledging one run take turns.
CREATE FUNCTION flowworker.ack_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    outputs jsonb[], errors text[], worker_ids uuid[]
)
RETURNS TABLE (ord int, result text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Every statement here reaches its rows by key. Plans are cached per
-- session: one made while the tables were small (a new install, a worker
-- started before the load) would scan them whole for as long as the
-- session lives, so scans are ruled out; and a batch joins ~100 rows to
-- the hot, cached tables, which the default random_page_cost prices as
-- dearer than a scan. Array arguments of every size would otherwise be
-- planned anew on each call (a custom plan looks cheaper for each size):
-- the one generic plan saves that, ~0.5 ms a call.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET random_page_cost = 1.1
AS $$
DECLARE
    v_live pg_catalog.uuid[];
    v_locked pg_catalog.uuid[];
    v_busy pg_catalog.uuid[] := '{}';
    v_run pg_catalog.record;
    v_done_ord bigint[];
    v_done_runs pg_catalog.uuid[];
    v_done_steps pg_catalog.text[];
    v_done_flows pg_catalog.text[];
    v_done_msgs bigint[];
    v_done_outputs pg_catalog.jsonb[];
    v_flow pg_catalog.text;
    v_singles pg_catalog.record;
    v_maps pg_catalog.record;
    v_going_on pg_catalog.uuid[];
    v_fail pg_catalog.record;
    v_fail_ords bigint[] := '{}';
    v_fail_results pg_catalog.text[] := '{}';
BEGIN
    -- ==================== GUARDS ====================
    IF worker_ids IS NULL OR cardinality(worker_ids) <> cardinality(run_ids)
       OR array_position(worker_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'ack_tasks needs the worker_id holding each claim'
            USING ERRCODE = '22004';
    END IF;
    -- Raises for the first output over the limits (the worker then fails that attempt).
    PERFORM flowworker._check_payloads(outputs, step_slugs, 'the output of step %L',
                                       'max_output_bytes');

    -- ==================== LOCK THE RUNS ====================
    -- In run_id order, skipping those another transaction holds; of the
    -- locked ones, those still going take outcomes.
    SELECT coalesce(array_agg(l.run_id) FILTER (WHERE l.status = 'started'), '{}'),
           coalesce(array_agg(l.run_id), '{}')
    INTO v_live, v_locked
    FROM (SELECT r.run_id, r.status FROM flowworker.runs r WHERE r.run_id = ANY (run_ids)
          ORDER BY r.run_id FOR UPDATE SKIP LOCKED) AS l;
    IF cardinality(v_locked) < (SELECT count(DISTINCT x) FROM unnest(run_ids) AS x) THEN
        -- Skipped (or no such run): wait a moment for each, as another
        -- worker's acknowledgement of the same run ends in milliseconds;
        -- those still held are busy.
        FOR v_run IN
            SELECT r.run_id FROM flowworker.runs r
            WHERE r.run_id = ANY (run_ids) AND NOT r.run_id = ANY (v_locked)
            ORDER BY r.run_id
        LOOP
            IF NOT flowworker._lock_run_briefly(v_run.run_id) THEN
                v_busy := v_busy || v_run.run_id;
            ELSIF (SELECT r.status FROM flowworker.runs r WHERE r.run_id = v_run.run_id)
                  = 'started' THEN
                v_live := v_live || v_run.run_id;
            END IF;
        END LOOP;
    END IF;

    -- ==================== COMPLETIONS ====================
    -- ---------- Tasks whose claim is current, in runs still going ----------
    WITH done AS (
        UPDATE flowworker.step_tasks t
        SET status = 'completed', output = a.output, completed_at = now()
        FROM unnest(run_ids, step_slugs, task_indexes, attempts, outputs, errors, worker_ids)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, output, error,
                                      worker_id, ord)
        WHERE a.error IS NULL AND a.run_id = ANY (v_live)
          AND t.run_id = a.run_id AND t.step_slug = a.step_slug AND t.task_index = a.task_index
          AND t.status = 'started' AND t.attempts_count = a.attempt
          AND t.worker_id = a.worker_id
        RETURNING a.ord, t.run_id, t.step_slug, t.flow_slug, t.message_id, a.output
    )
    SELECT array_agg(d.ord), array_agg(d.run_id), array_agg(d.step_slug),
           array_agg(d.flow_slug), array_agg(d.message_id), array_agg(d.output)
    INTO v_done_ord, v_done_runs, v_done_steps, v_done_flows, v_done_msgs, v_done_outputs
    FROM done d;

    IF v_done_ord IS NOT NULL THEN
        -- ---------- Their messages ----------
        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_done_flows) AS f LOOP
            EXECUTE format('DELETE FROM flowworker.%I WHERE msg_id = ANY ($1)',
                           'q_' || flowworker.check_slug(v_flow, 'flow slug'))
                USING ARRAY(SELECT m FROM unnest(v_done_flows, v_done_msgs) AS x(f, m)
                            WHERE x.f = v_flow);
        END LOOP;

        -- ---------- Counted off their steps ----------
        -- A single step at zero is complete, marked in the same UPDATE (a
        -- second update of a row this transaction wrote would run the
        -- foreign-key checks again); its output is its one task's, in hand.
        -- A map step at zero is completed below, from all its tasks.
        WITH x AS (
            SELECT d.run_id, d.step_slug, count(*)::int AS n, (array_agg(d.output))[1] AS output
            FROM unnest(v_done_runs, v_done_steps, v_done_outputs) AS d(run_id, step_slug, output)
            GROUP BY d.run_id, d.step_slug
        ), counted AS (
            UPDATE flowworker.step_states ss
            SET remaining_tasks = ss.remaining_tasks - x.n,
                status = CASE WHEN ss.remaining_tasks = x.n AND s.step_type = 'single'
                              THEN 'completed' ELSE ss.status END,
                completed_at = CASE WHEN ss.remaining_tasks = x.n AND s.step_type = 'single'
                                    THEN now() ELSE ss.completed_at END,
                output = CASE WHEN ss.remaining_tasks = x.n AND s.step_type = 'single'
                              THEN x.output ELSE ss.output END
            FROM x, flowworker.steps s
            WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug
              AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            RETURNING ss.run_id, ss.step_slug, ss.flow_slug, ss.remaining_tasks, ss.output,
                      s.step_type
        )
        SELECT array_agg(c.run_id) FILTER (WHERE c.step_type = 'single') AS runs,
               array_agg(c.step_slug) FILTER (WHERE c.step_type = 'single') AS steps,
               array_agg(c.flow_slug) FILTER (WHERE c.step_type = 'single') AS flows,
               array_agg(c.output) FILTER (WHERE c.step_type = 'single') AS outputs,
               array_agg(c.run_id) FILTER (WHERE c.step_type = 'map') AS map_runs,
               array_agg(c.step_slug) FILTER (WHERE c.step_type = 'map') AS map_steps,
               array_agg(c.flow_slug) FILTER (WHERE c.step_type = 'map') AS map_flows
        INTO v_singles
        FROM counted c
        WHERE c.remaining_tasks = 0;

        -- ---------- Steps complete ----------
        v_going_on := '{}';
        IF v_singles.runs IS NOT NULL THEN
            v_going_on := flowworker._complete_steps(v_singles.runs, v_singles.steps,
                                                     v_singles.flows, v_singles.outputs, true);
        END IF;
        IF v_singles.map_runs IS NOT NULL THEN
            SELECT * INTO v_maps
            FROM flowworker._complete_maps(v_singles.map_runs, v_singles.map_steps,
                                           v_singles.map_flows);
            IF v_maps.runs IS NOT NULL THEN
                v_going_on := v_going_on || flowworker._complete_steps(
                    v_maps.runs, v_maps.steps, v_maps.flows, v_maps.outputs);
            END IF;
        END IF;
        IF cardinality(v_going_on) > 0 THEN
            PERFORM flowworker._start_ready_steps(v_going_on);
        END IF;
    END IF;

    -- ==================== FAILURES ====================
    -- Rare: one at a time, in run order (their run is locked).
    FOR v_fail IN
        SELECT a.* FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
        WHERE a.error IS NOT NULL AND a.run_id = ANY (v_live)
        ORDER BY a.run_id, a.step_slug, a.task_index
    LOOP
        v_fail_ords := v_fail_ords || v_fail.ord;
        v_fail_results := v_fail_results || flowworker.fail_task(
            v_fail.run_id, v_fail.step_slug, v_fail.task_index, v_fail.attempt, v_fail.error,
            v_fail.worker_id);
    END LOOP;

    -- ==================== RESULTS ====================
    RETURN QUERY
    SELECT a.ord::int,
           CASE WHEN a.ord = ANY (coalesce(v_done_ord, '{}'::bigint[])) THEN 'completed'
                WHEN f.result IS NOT NULL THEN f.result
                WHEN a.error IS NULL AND EXISTS (
                    SELECT 1 FROM flowworker.step_tasks t
                    WHERE t.run_id = a.run_id AND t.step_slug = a.step_slug
                      AND t.task_index = a.task_index AND t.status = 'completed'
                      AND t.attempts_count = a.attempt AND t.worker_id = a.worker_id)
                THEN 'completed'
                WHEN a.run_id = ANY (v_busy) THEN 'busy'
                ELSE 'stale' END
    FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
             WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
    LEFT JOIN unnest(v_fail_ords, v_fail_results) AS f(ord, result) ON f.ord = a.ord
    ORDER BY a.ord;
END;
$$;

-- Record a task's output under the claim that produced it: its attempt
-- number and the worker holding it. Returns true when this call recorded
-- it; false, changing nothing, when that claim is not current (the task was
-- re-claimed, already finished, or its run is over) or is another worker's.
-- Unlike the worker's ack_tasks it waits for a run another transaction holds.
-- There is one implementation of completing: this is ack_tasks with one outcome.
CREATE FUNCTION flowworker.complete_task(
    run_id uuid, step_slug text, task_index int, attempt int, output jsonb,
    worker_id uuid DEFAULT NULL
)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    IF complete_task.worker_id IS NULL THEN
        RAISE EXCEPTION 'complete_task needs the worker_id that holds the claim'
            USING ERRCODE = '22004';
    END IF;
    PERFORM 1 FROM flowworker.runs r WHERE r.run_id = complete_task.run_id FOR UPDATE;
    PERFORM 1 FROM flowworker.step_tasks t
    WHERE t.run_id = complete_task.run_id AND t.step_slug = complete_task.step_slug
      AND t.task_index = complete_task.task_index AND t.status = 'started'
      AND t.attempts_count = complete_task.attempt AND t.worker_id = complete_task.worker_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN (SELECT a.result = 'completed'
            FROM flowworker.ack_tasks(ARRAY[complete_task.run_id], ARRAY[complete_task.step_slug],
                                      ARRAY[complete_task.task_index],
                                      ARRAY[complete_task.attempt], ARRAY[complete_task.output],
                                      ARRAY[NULL::pg_catalog.text],
                                      ARRAY[complete_task.worker_id]) AS a);
END;
$$;

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
-- One input or thousands: one generic plan, held to key lookups and nested
-- loops so that it is right at any table size (see _start_ready_steps).
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
    v_other pg_catalog.record;
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
    v_ids := ARRAY(SELECT coalesce(x.run_id, gen_random_uuid())
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
        IF v_steps = 0 THEN
            UPDATE flowworker.runs r SET status = 'completed', completed_at = now(), output = '{}'
            WHERE r.run_id = ANY (v_new);
        ELSIF v_root_map IS NOT NULL THEN
            PERFORM flowworker._start_ready_steps(v_new);  -- root map steps: sized from the input
        END IF;
    END IF;
    RETURN QUERY
    SELECT r.* FROM unnest(v_ids) WITH ORDINALITY AS x(run_id, ord)
    JOIN flowworker.runs r ON r.run_id = x.run_id
    ORDER BY x.ord;
END;
$$;

-- ---------- Grants: PUBLIC gets nothing; the roles get the new signatures ----------
REVOKE ALL ON FUNCTION
    flowworker._check_payloads(jsonb[], text[], text, text),
    flowworker._check_options(text, int, int, int, int),
    flowworker._lock_run_briefly(uuid),
    flowworker.create_flow(text, int, int, int),
    flowworker.add_step(text, text, text[], int, int, int, int, text),
    flowworker._queue_tasks(text, uuid[], text[], int[], int[], jsonb[]),
    flowworker._start_ready_steps(uuid[]),
    flowworker._complete_maps(uuid[], text[], text[]),
    flowworker.start_flows(text, jsonb[], uuid[]),
    flowworker.start_tasks(text, uuid, int, int),
    flowworker.fail_task(uuid, text, int, int, text, uuid),
    flowworker.release_tasks(uuid[], text[], int[], int[], uuid[]),
    flowworker.extend_claims(text, uuid[], text[], int[], int[], int, uuid[]),
    flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[]),
    flowworker.complete_task(uuid, text, int, int, jsonb, uuid)
FROM PUBLIC;

DO $grants$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'flowworker_worker') THEN
        RAISE NOTICE 'flowworker: roles missing (no CREATEROLE); re-run the grants of 0700_roles.sql';
        RETURN;
    END IF;
    GRANT EXECUTE ON FUNCTION flowworker.start_flows(text, jsonb[], uuid[]) TO flowworker_enqueuer;
    GRANT EXECUTE ON FUNCTION
        flowworker.start_tasks(text, uuid, int, int),
        flowworker.complete_task(uuid, text, int, int, jsonb, uuid),
        flowworker.fail_task(uuid, text, int, int, text, uuid),
        flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[]),
        flowworker.release_tasks(uuid[], text[], int[], int[], uuid[]),
        flowworker.extend_claims(text, uuid[], text[], int[], int[], int, uuid[])
        TO flowworker_worker;
END;
$grants$;

-- ---------- Runs that hold numbers no worker can read fail now ----------
-- (before this version such numbers were accepted, and a claim of their
-- tasks crashed every worker of the flow, over and over)
SELECT flowworker._fail_run(r.run_id, (
           SELECT s.step_slug FROM flowworker.steps s WHERE s.flow_slug = r.flow_slug
           ORDER BY s.step_index LIMIT 1),
       'input or a step output holds a number beyond the limit: JSON numbers must be 0 '
       'or between 1e-308 and 1e308 in magnitude (found when migrating to schema version 2)')
FROM flowworker.runs r
WHERE r.status = 'started' AND (
    jsonb_path_exists(r.input, 'strict $.** ? (@.type() == "number" && '
                      '(@ > 1e308 || @ < -1e308 || (@ != 0 && @ < 1e-308 && @ > -1e-308)))')
    OR EXISTS (SELECT 1 FROM flowworker.step_states ss WHERE ss.run_id = r.run_id
               AND jsonb_path_exists(ss.output, 'strict $.** ? (@.type() == "number" && '
                   '(@ > 1e308 || @ < -1e308 || (@ != 0 && @ < 1e-308 && @ > -1e-308)))'))
    OR EXISTS (SELECT 1 FROM flowworker.step_tasks t WHERE t.run_id = r.run_id
               AND jsonb_path_exists(t.output, 'strict $.** ? (@.type() == "number" && '
                   '(@ > 1e308 || @ < -1e308 || (@ != 0 && @ < 1e-308 && @ > -1e-308)))')));

INSERT INTO flowworker.migrations (version, name, min_worker_version) VALUES (2, 'hardening', 2);
