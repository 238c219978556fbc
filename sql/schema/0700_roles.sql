-- Group roles for users to grant to their own login roles:
--   flowworker_enqueuer  start and cancel runs, read run state
--   flowworker_worker    claim, complete, fail, release, heartbeat
--   flowworker_reader    read everything
--   flowworker_operator  steer runs: cancel, retry, pause, resume, signal; prune
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
    FOREACH r IN ARRAY ARRAY['flowworker_enqueuer', 'flowworker_worker', 'flowworker_reader',
                             'flowworker_operator'] LOOP
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
        TO flowworker_enqueuer, flowworker_worker, flowworker_reader, flowworker_operator;

    GRANT SELECT ON ALL TABLES IN SCHEMA flowworker TO flowworker_reader;
    ALTER DEFAULT PRIVILEGES IN SCHEMA flowworker GRANT SELECT ON TABLES TO flowworker_reader;

    GRANT SELECT ON flowworker.runs, flowworker.step_states, flowworker.step_tasks
        TO flowworker_enqueuer;
    GRANT EXECUTE ON FUNCTION
        flowworker.start_flow(text, jsonb, uuid),
        flowworker.start_flows(text, jsonb[], uuid[]),
        flowworker.cancel_run(uuid, text)
        TO flowworker_enqueuer;

    -- The worker reads the flow definitions (to refuse a shape mismatch), the
    -- schema version, and which of its runs ended.
    GRANT SELECT ON flowworker.migrations, flowworker.flows, flowworker.steps,
        flowworker.deps, flowworker.runs, flowworker.config
        TO flowworker_worker;
    GRANT EXECUTE ON FUNCTION
        flowworker.start_tasks(text, uuid, int, int),
        flowworker.complete_task(uuid, text, int, int, jsonb, uuid),
        flowworker.fail_task(uuid, text, int, int, text, uuid, int, boolean),
        flowworker.ack_tasks(uuid[], text[], int[], int[], jsonb[], text[], uuid[], int[],
                             boolean[], boolean),
        flowworker.release_tasks(uuid[], text[], int[], int[], uuid[]),
        flowworker.extend_claims(text, uuid[], text[], int[], int[], int, uuid[]),
        flowworker.register_worker(uuid, text, text, int),
        flowworker.heartbeat_worker(uuid),
        flowworker.stop_worker(uuid),
        flowworker.queue_metrics(text)
        TO flowworker_worker;

    -- The operator steers runs (the CLI's runs/flows/signal commands, the
    -- dashboard's actions, an application answering a webhook) and reads
    -- what it steers.
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
        flowworker.signal_token(uuid, jsonb),
        flowworker.prune(interval, int)
        TO flowworker_operator;
END;
$roles$;
