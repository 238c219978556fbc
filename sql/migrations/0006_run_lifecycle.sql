-- 0006 runs that stop and go: pause and resume a run or a whole flow,
-- retry a failed or cancelled run from where it stopped, wait steps that a
-- signal completes (approval gates among them), cancel reasons, and the
-- run history (flowworker.events). A new group role, flowworker_operator,
-- steers runs. Workers of version 2 keep running: what they call keeps its
-- arguments and meaning (a paused run's tasks are simply not claimed).

-- ---------- Statuses and what they need ----------
ALTER TABLE flowworker.runs
    DROP CONSTRAINT runs_status_check,
    ADD CONSTRAINT runs_status_check
        CHECK (status IN ('started', 'paused', 'completed', 'failed', 'cancelled')),
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN cancel_reason text;
ALTER TABLE flowworker.step_states
    DROP CONSTRAINT step_states_status_check,
    ADD CONSTRAINT step_states_status_check
        CHECK (status IN ('created', 'started', 'waiting', 'completed', 'failed', 'timed_out',
                          'skipped', 'cancelled')),
    ADD COLUMN wait_token uuid,
    ADD COLUMN waiting_at timestamptz;
CREATE UNIQUE INDEX step_states_wait_token_idx ON flowworker.step_states (wait_token)
    WHERE wait_token IS NOT NULL;
ALTER TABLE flowworker.steps
    DROP CONSTRAINT steps_step_type_check,
    ADD CONSTRAINT steps_step_type_check CHECK (step_type IN ('single', 'map', 'wait')),
    ADD COLUMN options text[],
    ADD COLUMN fail_on text[];
ALTER TABLE flowworker.flows ADD COLUMN paused_at timestamptz;
ALTER TABLE flowworker.step_tasks ADD COLUMN paused_delay interval;
ALTER TABLE flowworker.step_tasks
    ADD COLUMN attempts_base int NOT NULL DEFAULT 0 CHECK (attempts_base >= 0);
ALTER TYPE flowworker.task_claim ADD ATTRIBUTE is_wait boolean;

-- Run history, append-only, written by the functions that change a run in
-- the same transaction as the change (docs/runs.md): a run started, ended,
-- paused, resumed, retried or cancelled (with its reason); a step waiting,
-- signalled, timed out; every failed attempt with its error. A task that
-- succeeds writes none (its row says it all, and the task path stays as
-- fast as it was). Never payloads: inputs, outputs and signal payloads stay
-- in their rows. `actor` is `SET flowworker.actor = '...'` of the session
-- that made the change, else its login role.
CREATE TABLE flowworker.events (
    event_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id uuid NOT NULL,
    step_slug text,
    task_index int,
    attempt int,
    event text NOT NULL,
    detail jsonb,
    actor text,
    at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_run_idx ON flowworker.events (run_id, event_id);

-- ---------- Functions ----------
DROP FUNCTION flowworker._fail_run(uuid, text, text);
DROP FUNCTION flowworker.cancel_run(uuid);
DROP FUNCTION flowworker.add_step(text, text, text[], int, int, int, int, text);
DROP FUNCTION flowworker.queue_metrics(text);

-- Who makes a change, for the run history: the session's
-- `SET flowworker.actor = 'alice'` (an application names its user), else
-- its login role (inside a SECURITY DEFINER function current_user is the
-- owner; session_user is who connected).
CREATE FUNCTION flowworker._actor()
RETURNS text
LANGUAGE sql STABLE
SET search_path = ''
AS $$
    SELECT coalesce(nullif(pg_catalog.current_setting('flowworker.actor', true), ''),
                    session_user::pg_catalog.text);
$$;

-- Tell whoever waits for runs of this flow to end (client.wait_for_run) to
-- look again: a hint with no payload, on one channel per flow, folded by
-- PostgreSQL to one notification per transaction however many runs ended.
CREATE FUNCTION flowworker._run_ended(p_flow_slug text)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT pg_catalog.pg_notify('flowworker_end_' || p_flow_slug, '')
    FROM flowworker.config c WHERE c.name = 'notify' AND c.value <> 0;
$$;

-- A queue's messages: all, visible now, held by a paused run (vt
-- 'infinity', resume_run gives them back), and the age of the oldest.
CREATE FUNCTION flowworker.queue_metrics(queue_name text)
RETURNS TABLE (queue_length bigint, visible_length bigint, oldest_msg_age_seconds double precision,
               paused_length bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT count(*),
                count(*) FILTER (WHERE vt <= now()),
                coalesce(extract(epoch FROM now() - min(enqueued_at)), 0)::double precision,
                count(*) FILTER (WHERE vt = ''infinity'')
         FROM flowworker.%I',
        'q_' || flowworker.check_slug(queue_name, 'queue name'));
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
    step_type text DEFAULT 'single',
    options text[] DEFAULT NULL,
    fail_on text[] DEFAULT NULL
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
    IF add_step.step_type IS NULL OR add_step.step_type NOT IN ('single', 'map', 'wait') THEN
        RAISE EXCEPTION 'step %.%: step_type must be single, map or wait, not %',
            add_step.flow_slug, add_step.step_slug, coalesce(add_step.step_type, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    IF (add_step.options IS NOT NULL OR add_step.fail_on IS NOT NULL)
       AND add_step.step_type <> 'wait' THEN
        RAISE EXCEPTION 'step %.%: options and fail_on belong to wait steps (approval gates)',
            add_step.flow_slug, add_step.step_slug USING ERRCODE = '22023';
    END IF;
    IF cardinality(add_step.options) = 0 OR NOT add_step.fail_on <@ add_step.options
       OR add_step.fail_on IS NOT NULL AND add_step.options IS NULL THEN
        RAISE EXCEPTION 'step %.%: a gate needs options, and fail_on must be some of them',
            add_step.flow_slug, add_step.step_slug USING ERRCODE = '22023';
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
            timeout = add_step.timeout, start_delay = add_step.start_delay,
            options = add_step.options, fail_on = add_step.fail_on
        WHERE s.flow_slug = add_step.flow_slug AND s.step_slug = add_step.step_slug
          AND (s.max_attempts, s.base_delay, s.timeout, s.start_delay, s.options, s.fail_on)
              IS DISTINCT FROM (add_step.max_attempts, add_step.base_delay, add_step.timeout,
                                add_step.start_delay, add_step.options, add_step.fail_on)
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
                                       max_attempts, base_delay, timeout, start_delay,
                                       options, fail_on)
    SELECT add_step.flow_slug, add_step.step_slug, add_step.step_type,
           coalesce(max(s2.step_index) + 1, 0), cardinality(v_deps),
           add_step.max_attempts, add_step.base_delay, add_step.timeout, add_step.start_delay,
           add_step.options, add_step.fail_on
    FROM flowworker.steps s2 WHERE s2.flow_slug = add_step.flow_slug
    RETURNING * INTO v_step;
    INSERT INTO flowworker.deps (flow_slug, dep_slug, step_slug)
    SELECT add_step.flow_slug, d, add_step.step_slug FROM unnest(v_deps) d;
    RETURN v_step;
END;
$$;

-- Hide a paused run's messages from every claim: vt = 'infinity' (the claim
-- reads visible messages by (vt, msg_id), so it never reaches them, however
-- many there are), keeping in the task what was left of each delay so that
-- resume_run restores it. The caller holds the run lock.
CREATE FUNCTION flowworker._park_messages(p_run_id uuid, p_flow_slug text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
SET enable_seqscan = off
AS $$
DECLARE
    v_msg_ids bigint[];
BEGIN
    SELECT array_agg(t.message_id) INTO v_msg_ids FROM flowworker.step_tasks t
    WHERE t.run_id = p_run_id AND t.status IN ('queued', 'started');
    IF v_msg_ids IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'WITH parked AS (
            UPDATE flowworker.%I q SET vt = ''infinity''
            FROM (SELECT msg_id, vt FROM flowworker.%1$I WHERE msg_id = ANY ($1)
                  AND vt < ''infinity'' FOR UPDATE) old
            WHERE q.msg_id = old.msg_id
            RETURNING q.msg_id, greatest(old.vt - now(), ''0''::pg_catalog.interval) AS delay
        )
        UPDATE flowworker.step_tasks t SET paused_delay = p.delay
        FROM parked p WHERE t.flow_slug = $2 AND t.message_id = p.msg_id',
        'q_' || flowworker.check_slug(p_flow_slug, 'flow slug'))
        USING v_msg_ids, p_flow_slug;
END;
$$;

-- Give a resumed run's messages back to the claims, each after what was
-- left of its delay when the run was paused. The caller holds the run lock.
CREATE FUNCTION flowworker._unpark_messages(p_run_id uuid, p_flow_slug text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
SET enable_seqscan = off
AS $$
DECLARE
    v_msg_ids bigint[];
    v_delays pg_catalog.interval[];
BEGIN
    WITH unparked AS (
        UPDATE flowworker.step_tasks t SET paused_delay = NULL
        FROM (SELECT t2.run_id, t2.step_slug, t2.task_index, t2.paused_delay
              FROM flowworker.step_tasks t2
              WHERE t2.run_id = p_run_id AND t2.paused_delay IS NOT NULL FOR UPDATE) old
        WHERE t.run_id = old.run_id AND t.step_slug = old.step_slug
          AND t.task_index = old.task_index
        RETURNING t.message_id, old.paused_delay
    )
    SELECT array_agg(u.message_id), array_agg(u.paused_delay) INTO v_msg_ids, v_delays
    FROM unparked u;
    IF v_msg_ids IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'UPDATE flowworker.%I q SET vt = now() + d.delay
         FROM unnest($1, $2) AS d(msg_id, delay) WHERE q.msg_id = d.msg_id',
        'q_' || flowworker.check_slug(p_flow_slug, 'flow slug'))
        USING v_msg_ids, v_delays;
    IF EXISTS (SELECT 1 FROM unnest(v_delays) AS d WHERE d = '0'::pg_catalog.interval) THEN
        PERFORM flowworker.queue_notify(p_flow_slug);
    END IF;
END;
$$;

-- Fail a run (started or paused): the failing step is marked p_step_status
-- (failed, or timed_out for a wait) with p_error, the run failed with
-- `step <slug> failed: <p_error>`, every other unfinished step and task is
-- cancelled, and their messages are archived. The caller holds the run lock.
CREATE FUNCTION flowworker._fail_run(p_run_id uuid, p_step_slug text, p_error text,
                                     p_step_status text DEFAULT 'failed')
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
BEGIN
    UPDATE flowworker.runs r
    SET status = 'failed', failed_at = now(), paused_at = NULL,
        error_message = format('step %s failed: %s', p_step_slug, p_error)
    WHERE r.run_id = p_run_id AND r.status IN ('started', 'paused')
    RETURNING r.flow_slug INTO v_flow_slug;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_states ss
    SET status = p_step_status, failed_at = now(), error_message = p_error
    WHERE ss.run_id = p_run_id AND ss.step_slug = p_step_slug;
    PERFORM flowworker._cancel_unfinished(p_run_id, v_flow_slug);
    INSERT INTO flowworker.events (run_id, step_slug, event, detail)
    VALUES (p_run_id, p_step_slug, 'run.failed', pg_catalog.jsonb_build_object('error', p_error));
    PERFORM flowworker._run_ended(v_flow_slug);
END;
$$;

-- Cancel every step and task of a run that has not finished, and archive
-- their messages so no worker claims them again.
CREATE OR REPLACE FUNCTION flowworker._cancel_unfinished(p_run_id uuid, p_flow_slug text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_msg_ids bigint[];
BEGIN
    UPDATE flowworker.step_states ss SET status = 'cancelled'
    WHERE ss.run_id = p_run_id AND ss.status IN ('created', 'started', 'waiting');
    WITH cancelled AS (
        UPDATE flowworker.step_tasks t SET status = 'cancelled'
        WHERE t.run_id = p_run_id AND t.status IN ('queued', 'started')
        RETURNING t.message_id
    )
    SELECT array_agg(message_id) INTO v_msg_ids FROM cancelled;
    IF v_msg_ids IS NOT NULL THEN
        PERFORM flowworker.queue_archive(p_flow_slug, v_msg_ids);
    END IF;
END;
$$;

-- Record steps' outputs, count them off their dependents and their runs,
-- and complete the runs whose last step this was. Set-based: one call for
-- every step a batch of acknowledgements finished. The caller holds the
-- run locks. Returns the runs that go on (the caller starts what became
-- ready in them).
CREATE OR REPLACE FUNCTION flowworker._complete_steps(
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

-- Start every step of these runs whose deps are all complete: queue its
-- tasks, or complete it at once when it maps over an empty array (which
-- may make more steps ready, hence the loop). A wait step starts waiting
-- for a signal instead (a fresh wait_token), with one task whose message
-- becomes visible at its deadline (`timeout`), if it has one: the claim
-- that finds it times the wait out. A map step whose source is
-- not an array, or is wider than max_map_tasks, fails its run. Set-based: a batch of acknowledgements
-- starts the next steps of all its runs in a few statements. The caller
-- holds the run locks.
CREATE OR REPLACE FUNCTION flowworker._start_ready_steps(p_run_ids uuid[])
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

-- Map steps whose last task just completed: their output is every task's
-- output in index order. A step whose outputs add up past
-- max_map_output_bytes fails its run instead (the next step's input would
-- be that large, and past 256 MB jsonb_agg cannot build it at all), so its
-- size is summed before anything is built. The caller holds the run locks
-- and passes the completed steps on to _complete_steps.
CREATE OR REPLACE FUNCTION flowworker._complete_maps(
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

-- Start runs of a flow, one per input, in one statement: what an
-- application enqueueing a batch calls. run_ids (optional, one per input)
-- make the starts idempotent: a run_id that already exists for this flow
-- with the same input returns that run unchanged, so callers can retry a
-- start safely; one of another flow or with another input is an error (a
-- run id known to someone else must not hand them another caller's run).
-- Returns the runs in input order. Every input is
-- checked before anything is written, so a bad one starts none.
CREATE OR REPLACE FUNCTION flowworker.start_flows(flow_slug text, inputs jsonb[], run_ids uuid[] DEFAULT NULL)
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

-- Lock a run for an operator's action and check it is in a status the
-- action applies to; otherwise raise, naming the run and its status
-- (unknown run: no_data_found, P0002; wrong status: 55000).
CREATE FUNCTION flowworker._lock_run_for(p_run_id uuid, p_action text, p_statuses text[])
RETURNS flowworker.runs
LANGUAGE plpgsql
SET search_path = ''
SET enable_seqscan = off
AS $$
DECLARE
    v_run flowworker.runs;
BEGIN
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', p_run_id USING ERRCODE = 'P0002';
    END IF;
    IF NOT v_run.status = ANY (p_statuses) THEN
        RAISE EXCEPTION 'run % is %: only a run that is % can be %', p_run_id, v_run.status,
            array_to_string(p_statuses, ' or '), p_action
            USING ERRCODE = '55000';
    END IF;
    RETURN v_run;
END;
$$;

-- Cancel a run that has not finished (started or paused), keeping why on the
-- run and in its history; a finished run is returned unchanged.
CREATE FUNCTION flowworker.cancel_run(run_id uuid, reason text DEFAULT NULL)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
BEGIN
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = cancel_run.run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', cancel_run.run_id USING ERRCODE = 'P0002';
    END IF;
    IF v_run.status NOT IN ('started', 'paused') THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r
    SET status = 'cancelled', cancelled_at = now(), paused_at = NULL,
        cancel_reason = cancel_run.reason
    WHERE r.run_id = cancel_run.run_id
    RETURNING * INTO v_run;
    PERFORM flowworker._cancel_unfinished(v_run.run_id, v_run.flow_slug);
    INSERT INTO flowworker.events (run_id, event, detail, actor)
    VALUES (v_run.run_id, 'run.cancelled',
            CASE WHEN cancel_run.reason IS NOT NULL
                 THEN pg_catalog.jsonb_build_object('reason', cancel_run.reason) END,
            flowworker._actor());
    PERFORM flowworker._run_ended(v_run.flow_slug);
    RETURN v_run;
END;
$$;

-- Pause a run: none of its tasks is claimed until resume_run; tasks already
-- running finish and are recorded, and the steps they make ready wait.
-- Pausing a paused run changes nothing; pausing a finished run is an error.
CREATE FUNCTION flowworker.pause_run(run_id uuid)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
BEGIN
    v_run := flowworker._lock_run_for(pause_run.run_id, 'paused', ARRAY['started', 'paused']);
    IF v_run.status = 'paused' THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r SET status = 'paused', paused_at = now()
    WHERE r.run_id = pause_run.run_id
    RETURNING * INTO v_run;
    PERFORM flowworker._park_messages(v_run.run_id, v_run.flow_slug);
    INSERT INTO flowworker.events (run_id, event, actor)
    VALUES (v_run.run_id, 'run.paused', flowworker._actor());
    RETURN v_run;
END;
$$;

-- Resume a paused run where it stopped: its tasks are claimed again, each
-- after what was left of its delay, and the steps that became ready while
-- it was paused start. Resuming a started run changes nothing; resuming a
-- finished run is an error.
CREATE FUNCTION flowworker.resume_run(run_id uuid)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
BEGIN
    v_run := flowworker._lock_run_for(resume_run.run_id, 'resumed', ARRAY['started', 'paused']);
    IF v_run.status = 'started' THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r SET status = 'started', paused_at = NULL
    WHERE r.run_id = resume_run.run_id;
    PERFORM flowworker._unpark_messages(v_run.run_id, v_run.flow_slug);
    PERFORM flowworker._start_ready_steps(ARRAY[v_run.run_id]);
    INSERT INTO flowworker.events (run_id, event, actor)
    VALUES (v_run.run_id, 'run.resumed', flowworker._actor());
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = resume_run.run_id;
    RETURN v_run;
END;
$$;

-- Pause a whole flow: none of its tasks is claimed until resume_flow (runs
-- may still be started; they wait). One check per claim, by key: claiming
-- cost does not grow with what is paused.
CREATE FUNCTION flowworker.pause_flow(flow_slug text)
RETURNS flowworker.flows
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_flow flowworker.flows;
BEGIN
    UPDATE flowworker.flows f SET paused_at = coalesce(f.paused_at, now())
    WHERE f.flow_slug = pause_flow.flow_slug
    RETURNING * INTO v_flow;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow % does not exist', quote_literal(pause_flow.flow_slug)
            USING ERRCODE = 'P0002';
    END IF;
    RETURN v_flow;
END;
$$;

-- Resume a paused flow: its workers claim again at once (NOTIFY).
CREATE FUNCTION flowworker.resume_flow(flow_slug text)
RETURNS flowworker.flows
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
#variable_conflict use_column
DECLARE
    v_flow flowworker.flows;
BEGIN
    UPDATE flowworker.flows f SET paused_at = NULL
    WHERE f.flow_slug = resume_flow.flow_slug
    RETURNING * INTO v_flow;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow % does not exist', quote_literal(resume_flow.flow_slug)
            USING ERRCODE = 'P0002';
    END IF;
    PERFORM flowworker.queue_notify(v_flow.flow_slug);
    RETURN v_flow;
END;
$$;

-- Retry a failed or cancelled run from where it stopped: its failed, timed
-- out and cancelled steps start again with fresh attempts, and what depends
-- on them follows as usual; completed steps keep their outputs and their
-- handlers never run again. Of a map step, only the elements that did not
-- complete run again. A wait step waits again, with a fresh token. Retrying
-- a run in any other status is an error naming it.
CREATE FUNCTION flowworker.retry_run(run_id uuid)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
    q pg_catalog.text;
    v_seq pg_catalog.regclass;
    v_msgs pg_catalog.record;
    v_full pg_catalog.text[];
    v_maps pg_catalog.record;
BEGIN
    v_run := flowworker._lock_run_for(retry_run.run_id, 'retried', ARRAY['failed', 'cancelled']);
    q := 'q_' || flowworker.check_slug(v_run.flow_slug, 'flow slug');
    v_seq := format('flowworker.%I', q || '$seq')::pg_catalog.regclass;

    -- ---------- Wait steps wait again: from scratch ----------
    DELETE FROM flowworker.step_tasks t
    USING flowworker.step_states ss, flowworker.steps s
    WHERE ss.run_id = retry_run.run_id AND ss.status IN ('failed', 'timed_out', 'cancelled')
      AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug AND s.step_type = 'wait'
      AND t.run_id = ss.run_id AND t.step_slug = ss.step_slug;
    UPDATE flowworker.step_states ss
    SET status = 'created', started_at = NULL, failed_at = NULL, error_message = NULL,
        initial_tasks = NULL, remaining_tasks = NULL, wait_token = NULL, waiting_at = NULL
    FROM flowworker.steps s
    WHERE ss.run_id = retry_run.run_id AND ss.status IN ('failed', 'timed_out', 'cancelled')
      AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
      AND (s.step_type = 'wait' OR ss.started_at IS NULL);

    -- ---------- Started steps: their tasks that did not complete, queued again ----------
    WITH again AS (
        UPDATE flowworker.step_tasks t
        SET status = 'queued', attempts_base = t.attempts_count, worker_id = NULL,
            error_message = NULL,
            started_at = NULL, failed_at = NULL, paused_delay = NULL,
            message_id = nextval(v_seq), queued_at = now()
        FROM flowworker.step_states ss
        WHERE ss.run_id = retry_run.run_id AND ss.status IN ('failed', 'cancelled')
          AND t.run_id = ss.run_id AND t.step_slug = ss.step_slug
          AND t.status IN ('failed', 'cancelled')
        RETURNING t.message_id, t.step_slug, t.task_index
    )
    SELECT array_agg(a.message_id) AS ids,
           array_agg(pg_catalog.jsonb_build_object('run_id', retry_run.run_id,
                                                   'step_slug', a.step_slug,
                                                   'task_index', a.task_index)) AS messages
    INTO v_msgs
    FROM again a;
    IF v_msgs.ids IS NOT NULL THEN
        EXECUTE format('INSERT INTO flowworker.%I (msg_id, message) SELECT * FROM unnest($1, $2)', q)
            USING v_msgs.ids, v_msgs.messages;
        PERFORM flowworker.queue_notify(v_run.flow_slug);
    END IF;
    UPDATE flowworker.step_states ss
    SET status = 'started', failed_at = NULL, error_message = NULL,
        remaining_tasks = (SELECT count(*) FROM flowworker.step_tasks t
                           WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug
                             AND t.status <> 'completed')
    WHERE ss.run_id = retry_run.run_id AND ss.status IN ('failed', 'cancelled');
    SELECT array_agg(ss.step_slug) INTO v_full FROM flowworker.step_states ss
    WHERE ss.run_id = retry_run.run_id AND ss.status = 'started' AND ss.remaining_tasks = 0;

    -- ---------- The run goes on ----------
    UPDATE flowworker.runs r
    SET status = 'started', failed_at = NULL, cancelled_at = NULL, error_message = NULL,
        cancel_reason = NULL,
        remaining_steps = (SELECT count(*) FROM flowworker.step_states ss
                           WHERE ss.run_id = r.run_id AND ss.status <> 'completed')
    WHERE r.run_id = retry_run.run_id;
    INSERT INTO flowworker.events (run_id, event, detail, actor)
    VALUES (retry_run.run_id, 'run.retried',
            pg_catalog.jsonb_build_object('was', v_run.status), flowworker._actor());
    -- A map whose tasks had all completed (its outputs added up too large)
    -- is completed again: it fails again unless the limit was raised.
    IF v_full IS NOT NULL THEN
        SELECT * INTO v_maps FROM flowworker._complete_maps(
            array_fill(retry_run.run_id, ARRAY[cardinality(v_full)]), v_full,
            array_fill(v_run.flow_slug, ARRAY[cardinality(v_full)]));
        IF v_maps.runs IS NOT NULL THEN
            PERFORM flowworker._complete_steps(v_maps.runs, v_maps.steps, v_maps.flows,
                                               v_maps.outputs);
        END IF;
    END IF;
    PERFORM flowworker._start_ready_steps(ARRAY[retry_run.run_id]);
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = retry_run.run_id;
    RETURN v_run;
END;
$$;

-- Complete a waiting wait step: the payload becomes its output and what
-- depends on it starts (in this transaction; workers are notified). Returns
-- 'signalled', or 'already' when this step was signalled before (a
-- repeated webhook changes nothing). Race-free: the run's row is locked, so
-- of two signals at once one applies and the other answers 'already'.
-- An approval gate (a wait step with options) takes only a payload whose
-- "option" is one of them; an option in fail_on fails the run, its "note"
-- the error. Errors, each naming what it is about: no such run (P0002) or
-- step (undefined_object, 42704); a step that is not a wait step (22023); a payload over the limit
-- or with a bad option (54000, 22003, 22023); a step that does not wait yet
-- (its dependencies are not complete), timed out, or a run that is over
-- (55000): a signal is never dropped silently.
CREATE FUNCTION flowworker.signal(run_id uuid, step_slug text, payload jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_run flowworker.runs;
    v_state flowworker.step_states;
    v_step flowworker.steps;
    v_option pg_catalog.text := signal.payload ->> 'option';
    v_going_on pg_catalog.uuid[];
BEGIN
    SELECT * INTO v_run FROM flowworker.runs r WHERE r.run_id = signal.run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'run % does not exist', signal.run_id USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO v_step FROM flowworker.steps s
    WHERE s.flow_slug = v_run.flow_slug AND s.step_slug = signal.step_slug;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'flow % has no step %', quote_literal(v_run.flow_slug),
            quote_literal(signal.step_slug) USING ERRCODE = '42704';
    END IF;
    IF v_step.step_type <> 'wait' THEN
        RAISE EXCEPTION 'step % of flow % is a % step, not a wait step: it cannot be signalled',
            quote_literal(signal.step_slug), quote_literal(v_run.flow_slug), v_step.step_type
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_state FROM flowworker.step_states ss
    WHERE ss.run_id = signal.run_id AND ss.step_slug = signal.step_slug FOR UPDATE;
    IF v_state.status = 'completed' THEN
        RETURN 'already';
    END IF;
    IF v_run.status NOT IN ('started', 'paused') THEN
        RAISE EXCEPTION 'run % is %: step % can no longer be signalled', signal.run_id,
            v_run.status, quote_literal(signal.step_slug) USING ERRCODE = '55000';
    END IF;
    IF v_state.status <> 'waiting' THEN
        RAISE EXCEPTION 'step % of run % is %, not waiting: %', quote_literal(signal.step_slug),
            signal.run_id, v_state.status,
            CASE WHEN v_state.status = 'created'
                 THEN 'it waits once the steps it depends on complete; signal it then'
                 ELSE 'it can no longer be signalled' END
            USING ERRCODE = '55000';
    END IF;
    PERFORM flowworker._check_payloads(ARRAY[signal.payload], NULL,
                                       format('the signal for step %L', signal.step_slug),
                                       'max_output_bytes');
    IF v_step.options IS NOT NULL AND (v_option IS NULL OR NOT v_option = ANY (v_step.options)) THEN
        RAISE EXCEPTION 'step % is an approval gate: the payload''s "option" must be one of %, not %',
            quote_literal(signal.step_slug), array_to_string(v_step.options, ', '),
            coalesce(quote_literal(v_option), 'missing')
            USING ERRCODE = '22023';
    END IF;

    -- ---------- The wait ends: its deadline, if any, is done with ----------
    PERFORM flowworker.queue_archive(v_run.flow_slug, ARRAY(
        SELECT t.message_id FROM flowworker.step_tasks t
        WHERE t.run_id = signal.run_id AND t.step_slug = signal.step_slug));
    UPDATE flowworker.step_tasks t
    SET status = 'completed', completed_at = now(), output = signal.payload, paused_delay = NULL
    WHERE t.run_id = signal.run_id AND t.step_slug = signal.step_slug;
    INSERT INTO flowworker.events (run_id, step_slug, event, detail, actor)
    VALUES (signal.run_id, signal.step_slug, 'step.signalled',
            CASE WHEN v_option IS NOT NULL THEN pg_catalog.jsonb_build_object('option', v_option) END,
            coalesce(signal.payload ->> 'actor', flowworker._actor()));

    IF v_option = ANY (v_step.fail_on) THEN
        PERFORM flowworker._fail_run(signal.run_id, signal.step_slug,
            format('%s: %s', v_option, coalesce(signal.payload ->> 'note', '(no note)')));
        RETURN 'signalled';
    END IF;
    UPDATE flowworker.step_states ss
    SET status = 'completed', output = signal.payload, completed_at = now(), remaining_tasks = 0
    WHERE ss.run_id = signal.run_id AND ss.step_slug = signal.step_slug;
    v_going_on := flowworker._complete_steps(ARRAY[signal.run_id], ARRAY[signal.step_slug],
                                             ARRAY[v_run.flow_slug], ARRAY[signal.payload], true);
    IF cardinality(v_going_on) > 0 THEN
        PERFORM flowworker._start_ready_steps(v_going_on);
    END IF;
    RETURN 'signalled';
END;
$$;

-- signal() for a webhook that carries only the step's wait_token (fresh for
-- each wait, so an old link cannot signal a later wait). An unknown token
-- is an error (42704).
CREATE FUNCTION flowworker.signal_token(token uuid, payload jsonb DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
    v_state pg_catalog.record;
BEGIN
    SELECT ss.run_id, ss.step_slug INTO v_state FROM flowworker.step_states ss
    WHERE ss.wait_token = signal_token.token;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no step waits with token %', signal_token.token USING ERRCODE = '42704';
    END IF;
    RETURN flowworker.signal(v_state.run_id, v_state.step_slug, signal_token.payload);
END;
$$;

-- Inside start_tasks, which holds task and message locks against the lock
-- order and so must never wait: lock a started run and what failing it
-- touches (its unfinished tasks and their messages), or nothing at all.
-- The run's flow when all of it is locked; NULL when any of it is busy, or
-- the run is no longer started (then a later claim tries again, or there
-- is nothing to do).
CREATE FUNCTION flowworker._lock_run_nowait(p_run_id uuid)
RETURNS text
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
BEGIN
    SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
    WHERE r.run_id = p_run_id AND r.status = 'started' FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM flowworker.step_tasks t
    WHERE t.run_id = p_run_id AND t.status IN ('queued', 'started')
    FOR UPDATE NOWAIT;
    EXECUTE format(
        'SELECT 1 FROM flowworker.%I q JOIN flowworker.step_tasks t ON t.message_id = q.msg_id
         WHERE t.run_id = $1 AND t.flow_slug = $2 AND t.status IN (''queued'', ''started'')
         FOR UPDATE OF q NOWAIT', 'q_' || flowworker.check_slug(v_flow_slug, 'flow slug'))
        USING p_run_id, v_flow_slug;
    RETURN v_flow_slug;
EXCEPTION WHEN lock_not_available THEN
    RETURN NULL;
END;
$$;

-- A claim expired on the task's last attempt: its worker was lost every
-- time. Fail the task and its run. start_tasks already holds the task lock,
-- against the lock order, so it must never wait (_lock_run_nowait): when
-- anything is busy, nothing is changed, the message stays visible and a
-- later claim does this. A run that is already over (a lost sibling failed
-- it) is left as it is.
CREATE OR REPLACE FUNCTION flowworker._fail_lost_task(c flowworker.task_claim)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text := flowworker._lock_run_nowait(c.run_id);
    v_error pg_catalog.text := format('claim expired on attempt %s of %s: the worker running it was lost',
                           c.attempts_count, c.max_attempts);
BEGIN
    IF v_flow_slug IS NULL THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[c.msg_id]);
    INSERT INTO flowworker.events (run_id, step_slug, task_index, attempt, event, detail)
    VALUES (c.run_id, c.step_slug, c.task_index, c.attempts_count, 'task.failed',
            pg_catalog.jsonb_build_object('error', v_error));
    PERFORM flowworker._fail_run(c.run_id, c.step_slug, v_error);
END;
$$;

-- A wait step's deadline: its task's message became visible because the
-- wait's timeout passed. Unless a signal came first, the step times out and
-- its run fails, naming it. Called from start_tasks, which must never wait
-- (_lock_run_nowait): when anything is busy, nothing changes and a later
-- claim sees the message again. No cron: the deadline is a delayed message.
CREATE FUNCTION flowworker._time_out_wait(c flowworker.task_claim)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text := flowworker._lock_run_nowait(c.run_id);
    v_error pg_catalog.text := format('timed out after %s s without a signal', c.timeout);
BEGIN
    IF v_flow_slug IS NULL THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[c.msg_id]);
    INSERT INTO flowworker.events (run_id, step_slug, event, detail)
    VALUES (c.run_id, c.step_slug, 'step.timed_out',
            pg_catalog.jsonb_build_object('timeout', c.timeout));
    PERFORM flowworker._fail_run(c.run_id, c.step_slug, v_error, 'timed_out');
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
-- element). `waited` is how long, in seconds, the task was visible before
-- this claim (the queue-wait metric).
CREATE OR REPLACE FUNCTION flowworker.start_tasks(
    flow_slug text, worker_id uuid, batch_size int DEFAULT 10, grace_seconds int DEFAULT 5
)
RETURNS TABLE (
    msg_id bigint, run_id uuid, step_slug text, task_index int, attempt int,
    input jsonb, flow_input jsonb, fetch_flow_input boolean, timeout int, isolated boolean,
    waited double precision
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: one generic plan, rows by key only (see "Plans" in 0000_schema.sql).
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
    v_vts pg_catalog.timestamptz[];
    v_locked flowworker.task_claim[];
    v_orphans bigint[];
    v_exhausted flowworker.task_claim;
    v_lost boolean := false;
    v_waits boolean;
BEGIN
    -- ---------- GUARD: sane claim sizes and spans ----------
    -- A negative grace would make a claim visible again at once, and spend
    -- the task's attempts on every call.
    IF grace_seconds IS NULL OR grace_seconds NOT BETWEEN 1 AND 3600
       OR batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'start_tasks: grace_seconds must be 1..3600 and batch_size 1..10000, not % and %',
            grace_seconds, batch_size USING ERRCODE = '22023';
    END IF;

    -- ---------- GUARD: a paused flow is not claimed (pause_flow) ----------
    IF EXISTS (SELECT 1 FROM flowworker.flows f
               WHERE f.flow_slug = start_tasks.flow_slug AND f.paused_at IS NOT NULL) THEN
        RETURN;
    END IF;

    -- ---------- Visible messages, locked ----------
    EXECUTE format(
        'SELECT array_agg(m.msg_id), array_agg(m.message), array_agg(m.ctid), array_agg(m.vt)
         FROM (SELECT msg_id, message, ctid, vt FROM flowworker.%I
               WHERE vt <= now() ORDER BY vt, msg_id LIMIT $1
               FOR UPDATE SKIP LOCKED) m', q)
        INTO v_msg_ids, v_ptrs, v_msg_tids, v_vts USING batch_size;
    IF v_msg_ids IS NULL THEN
        RETURN;
    END IF;

    -- Lock the unfinished tasks these messages point at; skip any being
    -- written right now. Each task is looked up from its message (LATERAL),
    -- whatever the planner thinks of the table's size: a plan cached while
    -- the flow had few tasks must not scan them all once it has many.
    SELECT array_agg(l), bool_or(l.is_wait) INTO v_locked, v_waits
    FROM (
        SELECT t.run_id, t.step_slug, t.task_index, m.msg_id, t.status, t.attempts_count,
               -- the last attempt number allowed: attempts go on after a retry
               coalesce(s.max_attempts, f.max_attempts) + t.attempts_base,
               coalesce(s.timeout, f.timeout),
               t.tid, m.tid, s.step_type = 'wait'
        FROM unnest(v_msg_ids, v_ptrs, v_msg_tids) AS m(msg_id, ptr, tid)
        CROSS JOIN LATERAL (
            SELECT t.run_id, t.step_slug, t.task_index, t.status, t.attempts_count,
                   t.attempts_base, t.ctid AS tid
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
           task_tid, msg_tid, is_wait);

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

    -- ---------- Wait deadlines: no work for a worker ----------
    IF v_waits THEN
        PERFORM flowworker._time_out_wait(c) FROM unnest(v_locked) c WHERE c.is_wait;
        SELECT array_agg(c) INTO v_locked FROM unnest(v_locked) c WHERE NOT c.is_wait;
        IF v_locked IS NULL THEN
            RETURN;
        END IF;
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
           c.timeout, c.isolated,
           extract(epoch FROM now() - (v_vts)[array_position(v_msg_ids, c.msg_id)])::double precision
    FROM claimed c
    JOIN flowworker.runs r ON r.run_id = c.run_id
    JOIN flowworker.steps s ON s.flow_slug = c.flow_slug AND s.step_slug = c.step_slug
    -- pg_column_size reads a stored value's size without decompressing it.
    CROSS JOIN LATERAL (SELECT s.step_type = 'single' AND s.deps_count = 0 AS input_is_flow_input,
                               pg_column_size(r.input) > 8192 AS large) AS x
    ORDER BY c.msg_id;
END;
$$;

-- Keep current claims hidden for another `seconds` (at most the longest
-- claim span: a week's timeout and an hour's grace), for tasks still running.
-- A claim is its attempt number and the worker holding it. Returns how many
-- claims were still current.
CREATE OR REPLACE FUNCTION flowworker.extend_claims(
    flow_slug text, run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    seconds int, worker_ids uuid[]
)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
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
    -- A paused run's messages stay hidden ('infinity'); the extension goes to
    -- the delay resume_run restores, or the claim would lapse early after it.
    UPDATE flowworker.step_tasks t
    SET paused_delay = greatest(t.paused_delay, make_interval(secs => seconds))
    WHERE t.flow_slug = extend_claims.flow_slug AND t.message_id = ANY (v_msg_ids)
      AND t.paused_delay IS NOT NULL;
    RETURN cardinality(v_msg_ids);
END;
$$;

-- Record a failed attempt under its claim: the attempt number and the
-- worker holding it (a guessed attempt number from another worker login
-- changes nothing). Returns 'retry' when the task is queued again (visible
-- after retry_after seconds if given, else after the backoff delay),
-- 'failed' when it is not (attempts exhausted, or `final`: the handler said
-- so) and its run failed, 'stale' when the claim is no longer current.
-- The error is stored as `attempt n of m: <error>`. Its text is stored with
-- every failed attempt, so a huge one is cut to 8,192 characters and a note
-- of how many were cut, as the worker cuts an exception's text (a text the
-- worker already cut is left as it is).
CREATE OR REPLACE FUNCTION flowworker.fail_task(
    run_id uuid, step_slug text, task_index int, attempt int, error_message text,
    worker_id uuid DEFAULT NULL, retry_after int DEFAULT NULL, final boolean DEFAULT false
)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_flow_slug pg_catalog.text;
    v_paused boolean;
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
    IF fail_task.retry_after NOT BETWEEN 0 AND 86400 THEN
        RAISE EXCEPTION 'fail_task: retry_after must be between 0 and 86400 seconds, not %',
            fail_task.retry_after USING ERRCODE = '22023';
    END IF;
    SELECT r.flow_slug, r.status = 'paused' INTO v_flow_slug, v_paused FROM flowworker.runs r
    WHERE r.run_id = fail_task.run_id AND r.status IN ('started', 'paused') FOR UPDATE;
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
    v_max_attempts := v_max_attempts + v_task.attempts_base;  -- attempts go on after a retry
    v_error := format('attempt %s of %s: %s', v_task.attempts_count, v_max_attempts, v_error);
    INSERT INTO flowworker.events (run_id, step_slug, task_index, attempt, event, detail)
    VALUES (fail_task.run_id, fail_task.step_slug, fail_task.task_index, v_task.attempts_count,
            'task.failed', pg_catalog.jsonb_build_object('error', v_error));

    IF v_task.attempts_count < v_max_attempts AND NOT coalesce(fail_task.final, false) THEN
        UPDATE flowworker.step_tasks t
        SET status = 'queued', error_message = v_error
        WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
          AND t.task_index = fail_task.task_index;
        PERFORM flowworker.queue_set_vt(v_flow_slug, ARRAY[v_task.message_id],
            coalesce(fail_task.retry_after,
                     flowworker.retry_delay(v_base_delay,
                                            v_task.attempts_count - v_task.attempts_base)));
        IF v_paused THEN  -- the retry waits for resume_run, keeping its delay
            PERFORM flowworker._park_messages(fail_task.run_id, v_flow_slug);
        END IF;
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
CREATE OR REPLACE FUNCTION flowworker.release_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    worker_ids uuid[]
)
RETURNS int
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql).
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
            IF EXISTS (SELECT 1 FROM flowworker.runs r
                       WHERE r.run_id = v_task.run_id AND r.status = 'paused') THEN
                PERFORM flowworker._park_messages(v_task.run_id, v_flow_slug);
            END IF;
            v_released := v_released + 1;
        END IF;
    END LOOP;
    RETURN v_released;
END;
$$;

-- Apply many outcomes in one call: an output completes a task, an error
-- fails the attempt (fail_task, with the outcome's retry_after and final).
-- Each outcome names its claim: the attempt number and the worker holding
-- it. Returns, per input position (1-based), `result`:
--   'completed'  the output is recorded (also for a repeated completion of
--                a claim that was already applied, its reply lost);
--   'retry'      the attempt failed and the task is queued again;
--   'failed'     the attempt failed, the task's attempts are spent, its run failed;
--   'stale'      the claim is no longer current (or never was this worker's);
--   'busy'       another transaction holds the run's row: nothing was
--                written, send the outcome again later;
-- and with report_runs, for an outcome whose run ended in this call, the
-- run's status, how long it ran and, when it failed, the step that failed
-- (`run_status`, `run_seconds`, `run_failed_step`; NULL otherwise): the
-- worker's run.completed / run.failed events.
-- Runs are locked in run_id order, skipping the ones held elsewhere, then
-- waiting for those a moment each: an application transaction that holds
-- one run (cancel_run, then slow work) must not hold up the outcomes of
-- every other run, while two workers acknowledging one run take turns.
CREATE OR REPLACE FUNCTION flowworker.ack_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    outputs jsonb[], errors text[], worker_ids uuid[],
    retry_afters int[] DEFAULT NULL, finals boolean[] DEFAULT NULL,
    report_runs boolean DEFAULT false
)
RETURNS TABLE (ord int, result text, run_status text, run_seconds double precision,
               run_failed_step text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: one generic plan, rows by key only (see "Plans" in 0000_schema.sql).
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
    v_ended_runs pg_catalog.uuid[];
    v_ended_statuses pg_catalog.text[];
    v_ended_seconds double precision[];
    v_ended_steps pg_catalog.text[];
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
    -- locked ones, those still going (started, or paused: running tasks
    -- finish and are recorded) take outcomes.
    SELECT coalesce(array_agg(l.run_id) FILTER (WHERE l.status IN ('started', 'paused')), '{}'),
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
                  IN ('started', 'paused') THEN
                v_live := v_live || v_run.run_id;
            END IF;
        END LOOP;
    END IF;

    -- ==================== COMPLETIONS ====================
    -- ---------- Tasks whose claim is current, in runs still going ----------
    WITH done AS (
        UPDATE flowworker.step_tasks t
        SET status = 'completed', output = a.output, completed_at = now(),
            error_message = NULL  -- an earlier attempt's; every failed attempt is in its events
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
        SELECT a.* FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids,
                               retry_afters, finals)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id,
                                      retry_after, final, ord)
        WHERE a.error IS NOT NULL AND a.run_id = ANY (v_live)
        ORDER BY a.run_id, a.step_slug, a.task_index
    LOOP
        v_fail_ords := v_fail_ords || v_fail.ord;
        v_fail_results := v_fail_results || flowworker.fail_task(
            v_fail.run_id, v_fail.step_slug, v_fail.task_index, v_fail.attempt, v_fail.error,
            v_fail.worker_id, v_fail.retry_after, coalesce(v_fail.final, false));
    END LOOP;

    -- ==================== RUNS THAT ENDED ====================
    IF report_runs THEN
        SELECT array_agg(r.run_id), array_agg(r.status),
               array_agg(extract(epoch FROM coalesce(r.completed_at, r.failed_at)
                                            - r.started_at)::double precision),
               array_agg(CASE WHEN r.status = 'failed' THEN (
                   SELECT ss.step_slug FROM flowworker.step_states ss
                   WHERE ss.run_id = r.run_id AND ss.status = 'failed' LIMIT 1) END)
        INTO v_ended_runs, v_ended_statuses, v_ended_seconds, v_ended_steps
        FROM flowworker.runs r
        WHERE r.run_id = ANY (v_live) AND r.status NOT IN ('started', 'paused');
    END IF;

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
                ELSE 'stale' END,
           e.status, e.seconds, e.step
    FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
             WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
    LEFT JOIN unnest(v_fail_ords, v_fail_results) AS f(ord, result) ON f.ord = a.ord
    LEFT JOIN unnest(v_ended_runs, v_ended_statuses, v_ended_seconds, v_ended_steps)
                  AS e(run_id, status, seconds, step)
           ON e.run_id = a.run_id
    ORDER BY a.ord;
END;
$$;

-- ---------- Grants: PUBLIC gets nothing; the roles get theirs ----------
REVOKE ALL ON FUNCTION
    flowworker._actor(), flowworker._run_ended(text), flowworker.queue_metrics(text),
    flowworker.add_step(text, text, text[], int, int, int, int, text, text[], text[]),
    flowworker._park_messages(uuid, text), flowworker._unpark_messages(uuid, text),
    flowworker._fail_run(uuid, text, text, text), flowworker._lock_run_for(uuid, text, text[]),
    flowworker.cancel_run(uuid, text), flowworker.pause_run(uuid), flowworker.resume_run(uuid),
    flowworker.pause_flow(text), flowworker.resume_flow(text), flowworker.retry_run(uuid),
    flowworker.signal(uuid, text, jsonb), flowworker.signal_token(uuid, jsonb),
    flowworker._lock_run_nowait(uuid), flowworker._time_out_wait(flowworker.task_claim)
FROM PUBLIC;

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'flowworker_operator') THEN
        BEGIN
            CREATE ROLE flowworker_operator NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;  -- created meanwhile
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'flowworker: cannot create role flowworker_operator (no CREATEROLE); '
                             'ask an administrator to create it and re-run the grants of 0700_roles.sql';
                RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA flowworker TO flowworker_operator;
    GRANT EXECUTE ON FUNCTION flowworker.cancel_run(uuid, text) TO flowworker_enqueuer;
    GRANT EXECUTE ON FUNCTION flowworker.queue_metrics(text) TO flowworker_worker;
    GRANT SELECT ON flowworker.runs, flowworker.step_states, flowworker.step_tasks,
        flowworker.events, flowworker.flows, flowworker.steps, flowworker.deps
        TO flowworker_operator;
    GRANT EXECUTE ON FUNCTION
        flowworker.cancel_run(uuid, text),
        flowworker.retry_run(uuid),
        flowworker.pause_run(uuid),
        flowworker.resume_run(uuid),
        flowworker.pause_flow(text),
        flowworker.resume_flow(text),
        flowworker.signal(uuid, text, jsonb),
        flowworker.signal_token(uuid, jsonb)
        TO flowworker_operator;
END;
$roles$;

INSERT INTO flowworker.migrations (version, name, min_worker_version) VALUES (6, 'run_lifecycle', 2);
