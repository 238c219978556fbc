-- flowworker: durable DAG workflows. Every state transition is a function here.
--
-- Lock order, followed by every function that takes more than one lock:
--   run -> step state -> task -> message
-- (start_flow and add_step first take the flow row: shared and exclusive.)
-- start_tasks is the one exception: it locks messages first, then tasks and
-- runs with SKIP LOCKED only, and what failing a lost task's run touches with
-- NOWAIT (giving up when busy), so it never waits and cannot deadlock.
--
-- Every function pins search_path = '' and qualifies every name, type names
-- included: with an empty search_path the caller's temporary schema is still
-- searched first for types, so a bare `text` or `record` in a SECURITY
-- DEFINER function could resolve to a caller's temporary domain and run the
-- caller's code with the owner's rights. (SQL keywords such as int, bigint,
-- boolean and numeric always mean the pg_catalog type.)
CREATE SCHEMA flowworker;
-- Nothing in this schema is usable by PUBLIC unless granted (0700).
-- Functions are EXECUTE-able by PUBLIC by default, and PostgreSQL cannot
-- take a global default back per schema (ALTER DEFAULT PRIVILEGES IN SCHEMA
-- ... REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC has no effect), so 0700
-- revokes EXECUTE on every function from PUBLIC, and a later migration
-- that adds a function must do the same. Tables and sequences, queues
-- included, grant PUBLIC nothing by default.
CREATE TABLE flowworker.migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
-- Limits an operator may change (UPDATE flowworker.config ...). Kept in a
-- table, not a GUC, so the roles that start runs cannot raise them.
CREATE TABLE flowworker.config (
    name text PRIMARY KEY,
    value bigint NOT NULL CHECK (value >= 0),
    description text NOT NULL
);

INSERT INTO flowworker.config (name, value, description) VALUES
    ('max_input_bytes', 1048576,
     'Largest flow input start_flow accepts, in bytes of jsonb (default 1 MiB).'),
    ('max_output_bytes', 1048576,
     'Largest task output complete_task accepts, in bytes of jsonb (default 1 MiB).'),
    ('notify', 1,
     '1: NOTIFY workers when work becomes visible; 0: workers find it by polling.');
CREATE TABLE flowworker.flows (
    flow_slug text PRIMARY KEY,
    max_attempts int NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    base_delay int NOT NULL DEFAULT 1 CHECK (base_delay >= 0),
    timeout int NOT NULL DEFAULT 60 CHECK (timeout >= 1),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE flowworker.steps (
    flow_slug text NOT NULL REFERENCES flowworker.flows (flow_slug),
    step_slug text NOT NULL,
    step_type text NOT NULL DEFAULT 'single' CHECK (step_type IN ('single', 'map')),
    step_index int NOT NULL,
    deps_count int NOT NULL DEFAULT 0,
    max_attempts int CHECK (max_attempts >= 1),
    base_delay int CHECK (base_delay >= 0),
    timeout int CHECK (timeout >= 1),
    start_delay int CHECK (start_delay >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_slug, step_slug),
    UNIQUE (flow_slug, step_index)
);
CREATE TABLE flowworker.deps (
    flow_slug text NOT NULL,
    dep_slug text NOT NULL,
    step_slug text NOT NULL,
    PRIMARY KEY (flow_slug, step_slug, dep_slug),
    FOREIGN KEY (flow_slug, dep_slug) REFERENCES flowworker.steps (flow_slug, step_slug),
    FOREIGN KEY (flow_slug, step_slug) REFERENCES flowworker.steps (flow_slug, step_slug),
    CHECK (dep_slug <> step_slug)
);

CREATE INDEX deps_dependents_idx ON flowworker.deps (flow_slug, dep_slug);
-- fillfactor 50 and no index on status: a run's row is updated as its
-- steps finish, and with room on its page and no indexed column changed
-- the new version stays on the page (HOT), without new index entries.
-- Runs of a flow are found by (flow_slug, started_at), which never change.
CREATE TABLE flowworker.runs (
    run_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    flow_slug text NOT NULL REFERENCES flowworker.flows (flow_slug),
    status text NOT NULL DEFAULT 'started'
        CHECK (status IN ('started', 'completed', 'failed', 'cancelled')),
    input jsonb NOT NULL,
    output jsonb,
    error_message text,
    remaining_steps int NOT NULL DEFAULT 0 CHECK (remaining_steps >= 0),
    started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    failed_at timestamptz,
    cancelled_at timestamptz
) WITH (fillfactor = 50);

CREATE INDEX runs_flow_started_idx ON flowworker.runs (flow_slug, started_at);
-- fillfactor 50, as for step_tasks: batches of neighbouring rows are
-- updated in one transaction (started, then counted off), and need room
-- on their page for HOT updates.
CREATE TABLE flowworker.step_states (
    run_id uuid NOT NULL REFERENCES flowworker.runs (run_id),
    step_slug text NOT NULL,
    flow_slug text NOT NULL,
    status text NOT NULL DEFAULT 'created'
        CHECK (status IN ('created', 'started', 'completed', 'failed', 'skipped', 'cancelled')),
    remaining_deps int NOT NULL CHECK (remaining_deps >= 0),
    remaining_tasks int CHECK (remaining_tasks >= 0),
    initial_tasks int CHECK (initial_tasks >= 0),
    output jsonb,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    PRIMARY KEY (run_id, step_slug),
    FOREIGN KEY (flow_slug, step_slug) REFERENCES flowworker.steps (flow_slug, step_slug)
) WITH (fillfactor = 50);
-- fillfactor 50: a task row is updated at claim and at completion, and a
-- claim updates a whole batch of neighbouring rows in one transaction, so
-- every row on a page needs room for its new version beside the old one.
-- Then both updates stay on the page (HOT), without index churn; at 80 most
-- of a batch's updates did not fit and wrote new index entries.
CREATE TABLE flowworker.step_tasks (
    run_id uuid NOT NULL,
    step_slug text NOT NULL,
    task_index int NOT NULL CHECK (task_index >= 0),
    flow_slug text NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'started', 'completed', 'failed', 'cancelled')),
    -- Counted at claim; the claim token handed to the worker is this number.
    attempts_count int NOT NULL DEFAULT 0 CHECK (attempts_count >= 0),
    message_id bigint NOT NULL,
    worker_id uuid,
    output jsonb,
    error_message text,
    queued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    PRIMARY KEY (run_id, step_slug, task_index),
    UNIQUE (flow_slug, message_id),
    FOREIGN KEY (run_id, step_slug) REFERENCES flowworker.step_states (run_id, step_slug)
) WITH (fillfactor = 50);
CREATE TABLE flowworker.workers (
    worker_id uuid PRIMARY KEY,
    flow_slug text NOT NULL,
    hostname text NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz
);
-- The allow-list every slug passes before it can reach dynamic SQL.
CREATE FUNCTION flowworker.check_slug(slug text, kind text DEFAULT 'slug')
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = ''
AS $$
BEGIN
    IF slug IS NULL OR slug !~ '^[a-z][a-z0-9_]{0,47}$' THEN
        RAISE EXCEPTION 'invalid %: %', kind, coalesce(quote_literal(slug), 'NULL')
            USING ERRCODE = '22023',
                  HINT = 'slugs match ^[a-z][a-z0-9_]{0,47}$';
    END IF;
    RETURN slug;
END;
$$;
-- Refuse a payload over the configured limit, naming what it is.
CREATE FUNCTION flowworker._check_size(payload jsonb, limit_name text, what text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = ''
AS $$
DECLARE
    v_size int := pg_column_size(payload);
    v_limit bigint;
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = limit_name;
    IF v_size > v_limit THEN
        RAISE EXCEPTION '% is % bytes, over the limit of % bytes', what, v_size, v_limit
            USING ERRCODE = '54000',
                  HINT = format('raise it with UPDATE flowworker.config SET value = ... '
                                'WHERE name = %L', limit_name);
    END IF;
END;
$$;
-- A pgmq-style queue: one table of messages and one archive per flow.
-- The queue is q_<slug> and the archive a_<slug>; everything else derived
-- from the slug ends in '$...', a character no slug contains, so no flow's
-- sequence or index can take the name of another flow's queue or archive
-- (with q_<slug>_seq, flows x and x_seq would both want q_x_seq).
CREATE FUNCTION flowworker.queue_create(queue_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    q pg_catalog.text := 'q_' || flowworker.check_slug(queue_name, 'queue name');
    a pg_catalog.text := 'a_' || queue_name;
BEGIN
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS flowworker.%I', q || '$seq');
    -- fillfactor 50: a claim moves a message's vt, an indexed column, so the
    -- update is never HOT; with room on its page the new version stays
    -- there, and the update need not lock the old row and move it away
    -- (one more WAL record per claim, and scattered rows, at 100).
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS flowworker.%I (
            msg_id bigint CONSTRAINT %I PRIMARY KEY DEFAULT nextval(%L),
            read_ct int NOT NULL DEFAULT 0,
            enqueued_at pg_catalog.timestamptz NOT NULL DEFAULT now(),
            vt pg_catalog.timestamptz NOT NULL DEFAULT now(),
            message pg_catalog.jsonb NOT NULL
        ) WITH (fillfactor = 50)', q, q || '$pkey', format('flowworker.%I', q || '$seq'));
    EXECUTE format('ALTER SEQUENCE flowworker.%I OWNED BY flowworker.%I.msg_id', q || '$seq', q);
    -- The claim reads visible messages in (vt, msg_id) order and stops at LIMIT.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON flowworker.%I (vt, msg_id)', q || '$vt', q);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS flowworker.%I (
            msg_id bigint CONSTRAINT %I PRIMARY KEY,
            read_ct int NOT NULL,
            enqueued_at pg_catalog.timestamptz NOT NULL,
            vt pg_catalog.timestamptz NOT NULL,
            message pg_catalog.jsonb NOT NULL,
            archived_at pg_catalog.timestamptz NOT NULL DEFAULT now()
        )', a, a || '$pkey');
END;
$$;
-- Send messages, visible after delay_seconds; NOTIFY when they are visible now.
CREATE FUNCTION flowworker.queue_send(queue_name text, messages jsonb[], delay_seconds int DEFAULT 0)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO flowworker.%I (vt, message)
         SELECT now() + make_interval(secs => $2), m FROM unnest($1) AS m
         RETURNING msg_id', 'q_' || flowworker.check_slug(queue_name, 'queue name'))
        USING messages, delay_seconds;
    IF delay_seconds <= 0 THEN
        PERFORM flowworker.queue_notify(queue_name);
    END IF;
END;
$$;
-- A data-free hint. PostgreSQL folds identical notifications within one
-- transaction, so a queue is notified at most once per transaction.
-- flowworker.config 'notify' = 0 turns notifications off.
CREATE FUNCTION flowworker.queue_notify(queue_name text)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT pg_notify('flowworker_' || queue_name, '')
    FROM flowworker.config c WHERE c.name = 'notify' AND c.value <> 0;
$$;
-- Read up to qty visible messages and hide them for vt_seconds.
CREATE FUNCTION flowworker.queue_read(queue_name text, vt_seconds int, qty int)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, vt timestamptz, message jsonb)
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH picked AS (
            SELECT q.msg_id FROM flowworker.%1$I q
            WHERE q.vt <= now()
            ORDER BY q.vt, q.msg_id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE flowworker.%1$I q
        SET vt = now() + make_interval(secs => $1), read_ct = q.read_ct + 1
        FROM picked
        WHERE q.msg_id = picked.msg_id
        RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message',
        'q_' || flowworker.check_slug(queue_name, 'queue name'))
        USING vt_seconds, qty;
END;
$$;
CREATE FUNCTION flowworker.queue_delete(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'DELETE FROM flowworker.%I WHERE msg_id = ANY($1) RETURNING msg_id',
        'q_' || flowworker.check_slug(queue_name, 'queue name'))
        USING msg_ids;
END;
$$;
-- Move messages to the archive table, keeping them for inspection.
CREATE FUNCTION flowworker.queue_archive(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH gone AS (
            DELETE FROM flowworker.%I WHERE msg_id = ANY($1)
            RETURNING msg_id, read_ct, enqueued_at, vt, message
        )
        INSERT INTO flowworker.%I (msg_id, read_ct, enqueued_at, vt, message)
        SELECT msg_id, read_ct, enqueued_at, vt, message FROM gone
        ON CONFLICT (msg_id) DO NOTHING
        RETURNING msg_id',
        'q_' || flowworker.check_slug(queue_name, 'queue name'), 'a_' || queue_name)
        USING msg_ids;
END;
$$;
-- Make messages visible again after vt_seconds (0: at once).
CREATE FUNCTION flowworker.queue_set_vt(queue_name text, msg_ids bigint[], vt_seconds int)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'UPDATE flowworker.%I SET vt = now() + make_interval(secs => $2)
         WHERE msg_id = ANY($1) RETURNING msg_id',
        'q_' || flowworker.check_slug(queue_name, 'queue name'))
        USING msg_ids, vt_seconds;
    IF vt_seconds <= 0 THEN
        PERFORM flowworker.queue_notify(queue_name);
    END IF;
END;
$$;
CREATE FUNCTION flowworker.queue_metrics(queue_name text)
RETURNS TABLE (queue_length bigint, visible_length bigint, oldest_msg_age_seconds double precision)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT count(*),
                count(*) FILTER (WHERE vt <= now()),
                coalesce(extract(epoch FROM now() - min(enqueued_at)), 0)::double precision
         FROM flowworker.%I',
        'q_' || flowworker.check_slug(queue_name, 'queue name'));
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
-- Seconds before attempt n+1 after attempt n failed: base_delay * 2^(n-1),
-- capped at one hour so a long retry chain still comes back the same day.
CREATE FUNCTION flowworker.retry_delay(base_delay int, attempt int)
RETURNS int
LANGUAGE sql IMMUTABLE
SET search_path = ''
AS $$
    SELECT least(base_delay::numeric * power(2::numeric, least(greatest(attempt, 1) - 1, 40)), 3600)::int;
$$;
-- Create steps' tasks and one message per task, for many steps of one flow:
-- p_counts[i] tasks of step p_step_slugs[i] in run p_run_ids[i], visible
-- after p_delays[i] seconds. The tasks are static SQL (planned once); the
-- queue insert is the one dynamic statement, kept trivial to plan.
CREATE FUNCTION flowworker._queue_tasks(
    p_flow_slug text, p_run_ids uuid[], p_step_slugs text[], p_counts int[], p_delays int[]
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
        INSERT INTO flowworker.step_tasks (run_id, step_slug, task_index, flow_slug, message_id)
        SELECT x.run_id, x.step_slug, i, p_flow_slug, nextval(v_seq)
        FROM unnest(p_run_ids, p_step_slugs, p_counts) WITH ORDINALITY AS x(run_id, step_slug, n, ord),
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
-- Fail a run: the failing step is marked failed, every other unfinished step
-- and task is cancelled, and their messages are archived. The caller holds
-- the run lock.
CREATE FUNCTION flowworker._fail_run(p_run_id uuid, p_step_slug text, p_error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
BEGIN
    UPDATE flowworker.runs r
    SET status = 'failed', failed_at = now(), error_message = p_error
    WHERE r.run_id = p_run_id AND r.status = 'started'
    RETURNING r.flow_slug INTO v_flow_slug;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE flowworker.step_states ss
    SET status = 'failed', failed_at = now(), error_message = p_error
    WHERE ss.run_id = p_run_id AND ss.step_slug = p_step_slug;
    PERFORM flowworker._cancel_unfinished(p_run_id, v_flow_slug);
END;
$$;
-- Cancel every step and task of a run that has not finished, and archive
-- their messages so no worker claims them again.
CREATE FUNCTION flowworker._cancel_unfinished(p_run_id uuid, p_flow_slug text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_msg_ids bigint[];
BEGIN
    UPDATE flowworker.step_states ss SET status = 'cancelled'
    WHERE ss.run_id = p_run_id AND ss.status IN ('created', 'started');
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
        RETURNING r.run_id, r.remaining_steps
    )
    SELECT array_agg(c.run_id) INTO v_going_on FROM counted c WHERE c.remaining_steps > 0;
    RETURN coalesce(v_going_on, '{}'::pg_catalog.uuid[]);
END;
$$;
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
BEGIN
    WHILE cardinality(v_runs) > 0 LOOP
        -- The ready steps, with the size of each map step's array (NULL when
        -- it is not an array), in run and step order.
        SELECT array_agg(y.run_id ORDER BY y.run_id, y.step_index) AS runs,
               array_agg(y.step_slug ORDER BY y.run_id, y.step_index) AS steps,
               array_agg(y.flow_slug ORDER BY y.run_id, y.step_index) AS flows,
               array_agg(y.n ORDER BY y.run_id, y.step_index) AS counts,
               array_agg(y.delay ORDER BY y.run_id, y.step_index) AS delays
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

        -- A map step whose source is not an array fails its run (the first
        -- such step of a run, in step order); nothing else of that run starts.
        IF array_position(v_ready.counts, NULL) IS NOT NULL THEN
            FOR v_bad IN
                SELECT DISTINCT ON (x.run_id) x.run_id, x.step_slug,
                       (SELECT d.dep_slug FROM flowworker.deps d
                        WHERE d.flow_slug = s.flow_slug AND d.step_slug = s.step_slug) AS dep_slug,
                       r AS run, s AS step
                FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts)
                         WITH ORDINALITY AS x(run_id, step_slug, flow_slug, n, ord)
                JOIN flowworker.runs r ON r.run_id = x.run_id
                JOIN flowworker.steps s ON s.flow_slug = x.flow_slug AND s.step_slug = x.step_slug
                WHERE x.n IS NULL
                ORDER BY x.run_id, x.ord
            LOOP
                PERFORM flowworker._fail_run(v_bad.run_id, v_bad.step_slug, format(
                    'map step %s expects an array from %s, got %s', v_bad.step_slug,
                    coalesce(v_bad.dep_slug, 'the flow input'),
                    coalesce(jsonb_typeof(flowworker._map_source(v_bad.run, v_bad.step)), 'null')));
            END LOOP;
            CONTINUE;  -- the ready steps again, those of the failed runs left out
        END IF;

        UPDATE flowworker.step_states ss
        SET status = 'started', started_at = now(), initial_tasks = x.n, remaining_tasks = x.n
        FROM unnest(v_ready.runs, v_ready.steps, v_ready.counts) AS x(run_id, step_slug, n)
        WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug;

        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_ready.flows) AS f LOOP
            PERFORM flowworker._queue_tasks(v_flow, array_agg(x.run_id), array_agg(x.step_slug),
                                            array_agg(x.n), array_agg(x.delay))
            FROM unnest(v_ready.runs, v_ready.steps, v_ready.flows, v_ready.counts,
                        v_ready.delays) AS x(run_id, step_slug, flow_slug, n, delay)
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
-- Start runs of a flow, one per input, in one statement: what an
-- application enqueueing a batch calls. run_ids (optional, one per input)
-- make the starts idempotent: a run_id that already exists for this flow
-- returns that run unchanged, so callers can retry a start safely; one of
-- another flow is an error. Returns the runs in input order. Every input is
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
    v_limit bigint;
    v_kind pg_catalog.text;
    v_steps int;
    v_ids pg_catalog.uuid[];
    v_new pg_catalog.uuid[];
    v_other flowworker.runs;
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
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = 'max_input_bytes';
    PERFORM flowworker._check_size(i, 'max_input_bytes',
                                   format('the input of flow %L', start_flows.flow_slug))
    FROM unnest(start_flows.inputs) AS i WHERE pg_column_size(i) > v_limit;
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
    -- A run of another flow with one of these ids may have committed since
    -- the check above (the insert waited for it): refuse it all the same.
    SELECT r.* INTO v_other FROM flowworker.runs r
    WHERE r.run_id = ANY (start_flows.run_ids) AND r.flow_slug <> start_flows.flow_slug LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'run % belongs to flow %, not %', v_other.run_id,
            quote_literal(v_other.flow_slug), quote_literal(start_flows.flow_slug)
            USING ERRCODE = '23505';
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
-- Cancel a run that has not finished; a finished run is returned unchanged.
CREATE FUNCTION flowworker.cancel_run(run_id uuid)
RETURNS flowworker.runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- By key only: a plan cached while the tables were small must not scan them
-- whole once they are large (see start_tasks).
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
    IF v_run.status <> 'started' THEN
        RETURN v_run;
    END IF;
    UPDATE flowworker.runs r SET status = 'cancelled', cancelled_at = now()
    WHERE r.run_id = cancel_run.run_id
    RETURNING * INTO v_run;
    PERFORM flowworker._cancel_unfinished(v_run.run_id, v_run.flow_slug);
    RETURN v_run;
END;
$$;
-- One locked task inside start_tasks.
CREATE TYPE flowworker.task_claim AS (
    run_id uuid,
    step_slug text,
    task_index int,
    msg_id bigint,
    status text,
    attempts_count int,
    max_attempts int,
    timeout int,
    -- Where the locked task and message rows are: they cannot move while
    -- locked, so the claim updates them without an index lookup.
    task_tid tid,
    msg_tid tid
);
-- A claim expired on the task's last attempt: its worker was lost every
-- time. Fail the task and its run. start_tasks already holds the task lock,
-- against the lock order, so it must never wait: the run is locked with
-- SKIP LOCKED and everything that failing the run touches (the run's
-- unfinished tasks and their messages) with NOWAIT. When any of it is busy,
-- nothing is changed, the message stays visible and a later claim does this.
-- A run that is already over (a lost sibling failed it) is left as it is.
CREATE FUNCTION flowworker._fail_lost_task(c flowworker.task_claim)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    v_flow_slug pg_catalog.text;
    v_error pg_catalog.text := format('claim expired on attempt %s of %s: the worker running it was lost',
                           c.attempts_count, c.max_attempts);
BEGIN
    BEGIN
        SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
        WHERE r.run_id = c.run_id AND r.status = 'started' FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        PERFORM 1 FROM flowworker.step_tasks t
        WHERE t.run_id = c.run_id AND t.status IN ('queued', 'started')
        FOR UPDATE NOWAIT;
        EXECUTE format(
            'SELECT 1 FROM flowworker.%I q JOIN flowworker.step_tasks t ON t.message_id = q.msg_id
             WHERE t.run_id = $1 AND t.flow_slug = $2 AND t.status IN (''queued'', ''started'')
             FOR UPDATE OF q NOWAIT', 'q_' || flowworker.check_slug(v_flow_slug, 'flow slug'))
            USING c.run_id, v_flow_slug;
    EXCEPTION WHEN lock_not_available THEN
        RETURN;
    END;
    UPDATE flowworker.step_tasks t
    SET status = 'failed', failed_at = now(), error_message = v_error
    WHERE t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index;
    PERFORM flowworker.queue_archive(v_flow_slug, ARRAY[c.msg_id]);
    PERFORM flowworker._fail_run(c.run_id, c.step_slug, v_error);
END;
$$;
-- Claim up to batch_size visible tasks of a flow for a worker.
--
-- Each claim counts an attempt; the attempt number is the claim token that
-- complete_task and fail_task check. A message whose claim expired (its
-- worker died) is visible again and is re-claimed here with attempt + 1, or
-- fails its task and run once max_attempts claims were spent. Messages that
-- point at nothing claimable are archived, so garbage never loops.
-- The claim stays hidden for the task timeout + grace_seconds.
CREATE FUNCTION flowworker.start_tasks(
    flow_slug text, worker_id uuid, batch_size int DEFAULT 10, grace_seconds int DEFAULT 5
)
RETURNS TABLE (
    msg_id bigint, run_id uuid, step_slug text, task_index int, attempt int,
    input jsonb, flow_input jsonb, timeout int, isolated boolean
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
                  c.timeout, c.status = 'started' AND c.attempts_count >= 2 AS isolated
    )
    SELECT c.msg_id, c.run_id, c.step_slug, c.task_index, c.attempts_count,
           CASE
               WHEN s.step_type = 'map' AND s.deps_count = 0 THEN r.input -> c.task_index
               WHEN s.step_type = 'map' THEN (
                   SELECT ss.output -> c.task_index
                   FROM flowworker.deps d
                   JOIN flowworker.step_states ss ON ss.run_id = c.run_id AND ss.step_slug = d.dep_slug
                   WHERE d.flow_slug = c.flow_slug AND d.step_slug = c.step_slug)
               WHEN s.deps_count = 0 THEN r.input
               ELSE (
                   SELECT jsonb_object_agg(d.dep_slug, ss.output)
                   FROM flowworker.deps d
                   JOIN flowworker.step_states ss ON ss.run_id = c.run_id AND ss.step_slug = d.dep_slug
                   WHERE d.flow_slug = c.flow_slug AND d.step_slug = c.step_slug)
           END,
           r.input, c.timeout, c.isolated
    FROM claimed c
    JOIN flowworker.runs r ON r.run_id = c.run_id
    JOIN flowworker.steps s ON s.flow_slug = c.flow_slug AND s.step_slug = c.step_slug
    ORDER BY c.msg_id;
END;
$$;
-- Record a failed attempt under its claim. Returns 'retry' when the task is
-- queued again (visible after the backoff delay), 'failed' when attempts are
-- exhausted and the run failed, 'stale' when the claim is no longer current.
-- The error text is stored with every failed attempt, so a huge one is cut
-- to 8,192 characters and a note of how many were cut, as the worker cuts an
-- exception's text (a text the worker already cut is left as it is).
CREATE FUNCTION flowworker.fail_task(
    run_id uuid, step_slug text, task_index int, attempt int, error_message text
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
    SELECT r.flow_slug INTO v_flow_slug FROM flowworker.runs r
    WHERE r.run_id = fail_task.run_id AND r.status = 'started' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;
    SELECT * INTO v_task FROM flowworker.step_tasks t
    WHERE t.run_id = fail_task.run_id AND t.step_slug = fail_task.step_slug
      AND t.task_index = fail_task.task_index
      AND t.status = 'started' AND t.attempts_count = fail_task.attempt
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
-- attempt (graceful shutdown). Only claims that are still current are
-- released. Returns how many were. With worker_ids, only the worker that
-- holds a claim can hand it back: a retried release cannot hand back the
-- claim another worker has since taken with the same attempt number.
CREATE FUNCTION flowworker.release_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    worker_ids uuid[] DEFAULT NULL
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
    -- One task at a time, each under its run lock, in the lock order.
    FOR v_task IN
        SELECT * FROM unnest(run_ids, step_slugs, task_indexes, attempts, worker_ids)
            AS c(run_id, step_slug, task_index, attempt, worker_id)
        ORDER BY c.run_id, c.step_slug, c.task_index
    LOOP
        PERFORM 1 FROM flowworker.runs r WHERE r.run_id = v_task.run_id FOR UPDATE;
        UPDATE flowworker.step_tasks t
        SET status = 'queued', attempts_count = t.attempts_count - 1
        WHERE t.run_id = v_task.run_id AND t.step_slug = v_task.step_slug
          AND t.task_index = v_task.task_index
          AND t.status = 'started' AND t.attempts_count = v_task.attempt
          AND (v_task.worker_id IS NULL OR t.worker_id = v_task.worker_id)
        RETURNING t.flow_slug, t.message_id INTO v_flow_slug, v_message_id;
        IF FOUND THEN
            PERFORM flowworker.queue_set_vt(v_flow_slug, ARRAY[v_message_id], 0);
            v_released := v_released + 1;
        END IF;
    END LOOP;
    RETURN v_released;
END;
$$;
-- Keep current claims hidden for another `seconds`, for tasks still running.
-- Returns how many claims were still current.
CREATE FUNCTION flowworker.extend_claims(
    flow_slug text, run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    seconds int
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
        FROM unnest(run_ids, step_slugs, task_indexes, attempts)
                 AS c(run_id, step_slug, task_index, attempt)
        JOIN flowworker.step_tasks t
          ON t.run_id = c.run_id AND t.step_slug = c.step_slug AND t.task_index = c.task_index
        WHERE t.flow_slug = extend_claims.flow_slug
          AND t.status = 'started' AND t.attempts_count = c.attempt
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
-- fails the attempt (fail_task). Set-based for completions: the runs are
-- locked in run_id order first, so two workers acknowledging overlapping
-- runs lock them in the same order. Returns, per input position (1-based),
-- 'completed', 'retry', 'failed' or 'stale' (the claim is no longer current).
-- With worker_ids, a claim is also the worker that holds it: an attempt
-- number handed back by release_tasks and claimed again by another worker
-- cannot be answered by the first. A repeated completion of a claim that
-- was already applied (its reply lost) answers 'completed' again.
CREATE FUNCTION flowworker.ack_tasks(
    run_ids uuid[], step_slugs text[], task_indexes int[], attempts int[],
    outputs jsonb[], errors text[], worker_ids uuid[] DEFAULT NULL
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
    v_limit bigint;
    v_done_ord bigint[];
    v_done_runs pg_catalog.uuid[];
    v_done_steps pg_catalog.text[];
    v_done_flows pg_catalog.text[];
    v_done_msgs bigint[];
    v_done_outputs pg_catalog.jsonb[];
    v_over pg_catalog.uuid[];
    v_flow pg_catalog.text;
    v_finished pg_catalog.record;
    v_fail pg_catalog.record;
    v_fail_ords bigint[] := '{}';
    v_fail_results pg_catalog.text[] := '{}';
BEGIN
    SELECT c.value INTO v_limit FROM flowworker.config c WHERE c.name = 'max_output_bytes';
    -- Raises for the first output over the limit (the worker then fails that attempt).
    PERFORM flowworker._check_size(a.output, 'max_output_bytes',
                                   format('the output of step %L', a.step_slug))
    FROM unnest(step_slugs, outputs) AS a(step_slug, output)
    WHERE pg_column_size(a.output) > v_limit;

    -- Lock the runs in run_id order; note the few that are over already.
    SELECT coalesce(array_agg(l.run_id) FILTER (WHERE l.status <> 'started'), '{}')
    INTO v_over
    FROM (SELECT r.run_id, r.status FROM flowworker.runs r WHERE r.run_id = ANY (run_ids)
          ORDER BY r.run_id FOR UPDATE) AS l;

    -- Completions whose claim is current, in a run that is still going.
    WITH done AS (
        UPDATE flowworker.step_tasks t
        SET status = 'completed', output = a.output, completed_at = now()
        FROM unnest(run_ids, step_slugs, task_indexes, attempts, outputs, errors, worker_ids)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, output, error,
                                      worker_id, ord)
        WHERE a.error IS NULL AND NOT (a.run_id = ANY (v_over))
          AND t.run_id = a.run_id AND t.step_slug = a.step_slug AND t.task_index = a.task_index
          AND t.status = 'started' AND t.attempts_count = a.attempt
          AND (a.worker_id IS NULL OR t.worker_id = a.worker_id)
        RETURNING a.ord, t.run_id, t.step_slug, t.flow_slug, t.message_id, a.output
    )
    SELECT array_agg(d.ord), array_agg(d.run_id), array_agg(d.step_slug),
           array_agg(d.flow_slug), array_agg(d.message_id), array_agg(d.output)
    INTO v_done_ord, v_done_runs, v_done_steps, v_done_flows, v_done_msgs, v_done_outputs
    FROM done d;

    IF v_done_ord IS NOT NULL THEN
        FOR v_flow IN SELECT DISTINCT f FROM unnest(v_done_flows) AS f LOOP
            EXECUTE format('DELETE FROM flowworker.%I WHERE msg_id = ANY ($1)',
                           'q_' || flowworker.check_slug(v_flow, 'flow slug'))
                USING ARRAY(SELECT m FROM unnest(v_done_flows, v_done_msgs) AS x(f, m)
                            WHERE x.f = v_flow);
        END LOOP;

        -- Count them off their steps; a step at zero is complete, marked in
        -- the same UPDATE (a second update of a row this transaction wrote
        -- would run the foreign-key checks again). A single step's output is
        -- its one task's, which is in hand.
        WITH x AS (
            SELECT d.run_id, d.step_slug, count(*)::int AS n, (array_agg(d.output))[1] AS output
            FROM unnest(v_done_runs, v_done_steps, v_done_outputs) AS d(run_id, step_slug, output)
            GROUP BY d.run_id, d.step_slug
        ), counted AS (
            UPDATE flowworker.step_states ss
            SET remaining_tasks = ss.remaining_tasks - x.n,
                status = CASE WHEN ss.remaining_tasks = x.n THEN 'completed' ELSE ss.status END,
                completed_at = CASE WHEN ss.remaining_tasks = x.n THEN now()
                                    ELSE ss.completed_at END,
                output = CASE WHEN ss.remaining_tasks <> x.n THEN ss.output
                              WHEN s.step_type = 'map' THEN (
                                  SELECT jsonb_agg(t.output ORDER BY t.task_index)
                                  FROM flowworker.step_tasks t
                                  WHERE t.run_id = ss.run_id AND t.step_slug = ss.step_slug)
                              ELSE x.output END
            FROM x, flowworker.steps s
            WHERE ss.run_id = x.run_id AND ss.step_slug = x.step_slug
              AND s.flow_slug = ss.flow_slug AND s.step_slug = ss.step_slug
            RETURNING ss.run_id, ss.step_slug, ss.flow_slug, ss.remaining_tasks, ss.output
        )
        SELECT array_agg(c.run_id) AS runs, array_agg(c.step_slug) AS steps,
               array_agg(c.flow_slug) AS flows, array_agg(c.output) AS outputs
        INTO v_finished
        FROM counted c
        WHERE c.remaining_tasks = 0;

        IF v_finished.runs IS NOT NULL THEN
            PERFORM flowworker._start_ready_steps(flowworker._complete_steps(
                v_finished.runs, v_finished.steps, v_finished.flows, v_finished.outputs, true));
        END IF;
    END IF;

    -- Failures are rare: one at a time, in run order (their run is locked).
    FOR v_fail IN
        SELECT a.* FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
                 WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
        WHERE a.error IS NOT NULL
          AND (a.worker_id IS NULL OR EXISTS (
              SELECT 1 FROM flowworker.step_tasks t
              WHERE t.run_id = a.run_id AND t.step_slug = a.step_slug
                AND t.task_index = a.task_index AND t.worker_id = a.worker_id))
        ORDER BY a.run_id, a.step_slug, a.task_index
    LOOP
        v_fail_ords := v_fail_ords || v_fail.ord;
        v_fail_results := v_fail_results || flowworker.fail_task(
            v_fail.run_id, v_fail.step_slug, v_fail.task_index, v_fail.attempt, v_fail.error);
    END LOOP;

    RETURN QUERY
    SELECT a.ord::int,
           CASE WHEN a.ord = ANY (coalesce(v_done_ord, '{}'::bigint[])) THEN 'completed'
                WHEN f.result IS NOT NULL THEN f.result
                WHEN a.error IS NULL AND a.worker_id IS NOT NULL AND EXISTS (
                    SELECT 1 FROM flowworker.step_tasks t
                    WHERE t.run_id = a.run_id AND t.step_slug = a.step_slug
                      AND t.task_index = a.task_index AND t.status = 'completed'
                      AND t.attempts_count = a.attempt AND t.worker_id = a.worker_id)
                THEN 'completed'
                ELSE 'stale' END
    FROM unnest(run_ids, step_slugs, task_indexes, attempts, errors, worker_ids)
             WITH ORDINALITY AS a(run_id, step_slug, task_index, attempt, error, worker_id, ord)
    LEFT JOIN unnest(v_fail_ords, v_fail_results) AS f(ord, result) ON f.ord = a.ord
    ORDER BY a.ord;
END;
$$;
-- Record a task's output under the claim (attempt) that produced it.
-- Returns false and changes nothing when that claim is no longer current:
-- the task was re-claimed, already finished, or its run is over.
-- There is one implementation of completing: this is ack_tasks with one outcome.
CREATE FUNCTION flowworker.complete_task(
    run_id uuid, step_slug text, task_index int, attempt int, output jsonb
)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    SELECT a.result = 'completed'
    FROM flowworker.ack_tasks(ARRAY[complete_task.run_id], ARRAY[complete_task.step_slug],
                              ARRAY[complete_task.task_index], ARRAY[complete_task.attempt],
                              ARRAY[complete_task.output], ARRAY[NULL::pg_catalog.text]) AS a;
$$;
CREATE FUNCTION flowworker.register_worker(worker_id uuid, flow_slug text, hostname text, pid int)
RETURNS flowworker.workers
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    INSERT INTO flowworker.workers (worker_id, flow_slug, hostname, pid)
    VALUES (register_worker.worker_id, flowworker.check_slug(register_worker.flow_slug, 'flow slug'),
            register_worker.hostname, register_worker.pid)
    ON CONFLICT (worker_id) DO UPDATE
        SET last_heartbeat_at = now(), stopped_at = NULL
    RETURNING *;
$$;
-- Returns false when the worker is unknown or was marked stopped.
CREATE FUNCTION flowworker.heartbeat_worker(worker_id uuid)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    WITH beat AS (
        UPDATE flowworker.workers w SET last_heartbeat_at = now()
        WHERE w.worker_id = heartbeat_worker.worker_id AND w.stopped_at IS NULL
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM beat);
$$;
CREATE FUNCTION flowworker.stop_worker(worker_id uuid)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
    UPDATE flowworker.workers w SET stopped_at = now()
    WHERE w.worker_id = stop_worker.worker_id AND w.stopped_at IS NULL;
$$;
-- Group roles for users to grant to their own login roles:
--   flowworker_enqueuer  start and cancel runs, read run state
--   flowworker_worker    claim, complete, fail, release, heartbeat
--   flowworker_reader    read everything
-- Neither the enqueuer nor the worker may write a table directly; they act
-- only through SECURITY DEFINER functions with a pinned search_path.
-- Roles belong to the whole cluster: they are created once, and a migrator
-- without CREATEROLE leaves that (and these grants) to an administrator.
-- Functions are EXECUTE-able by PUBLIC by default: take that back for every
-- one of ours first, whether or not the roles below can be created.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA flowworker FROM PUBLIC;

DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['flowworker_enqueuer', 'flowworker_worker', 'flowworker_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN NULL;  -- created meanwhile
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'flowworker: cannot create role % (no CREATEROLE); '
                                 'ask an administrator to create it and re-run the grants', r;
                    RETURN;
            END;
        END IF;
    END LOOP;

    GRANT USAGE ON SCHEMA flowworker
        TO flowworker_enqueuer, flowworker_worker, flowworker_reader;

    GRANT SELECT ON ALL TABLES IN SCHEMA flowworker TO flowworker_reader;
    ALTER DEFAULT PRIVILEGES IN SCHEMA flowworker GRANT SELECT ON TABLES TO flowworker_reader;

    GRANT SELECT ON flowworker.runs, flowworker.step_states, flowworker.step_tasks
        TO flowworker_enqueuer;
    GRANT EXECUTE ON FUNCTION
        flowworker.start_flow(text, jsonb, uuid),
        flowworker.start_flows(text, jsonb[], uuid[]),
        flowworker.cancel_run(uuid)
        TO flowworker_enqueuer;

    -- The worker reads the flow definitions (to refuse a shape mismatch), the
    -- schema version, and which of its runs ended.
    GRANT SELECT ON flowworker.migrations, flowworker.flows, flowworker.steps,
        flowworker.deps, flowworker.runs, flowworker.config
        TO flowworker_worker;
    GRANT EXECUTE ON FUNCTION
        flowworker.start_tasks(text, uuid, int, int),
        flowworker.complete_task(uuid, text, int, int, jsonb),
        flowworker.fail_task(uuid, text, int, int, text),
        flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[]),
        flowworker.release_tasks(uuid[], text[], int[], int[], uuid[]),
        flowworker.extend_claims(text, uuid[], text[], int[], int[], int),
        flowworker.register_worker(uuid, text, text, int),
        flowworker.heartbeat_worker(uuid),
        flowworker.stop_worker(uuid),
        flowworker.queue_metrics(text)
        TO flowworker_worker;
END;
$roles$;
-- The schema version this tree installs; workers refuse any other.
INSERT INTO flowworker.migrations (version, name) VALUES (1, 'initial');
