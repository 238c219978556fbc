-- New runs' ids: UUIDs version 7 (RFC 9562), the first 48 bits the time in
-- milliseconds, 74 random bits after the version and variant. Runs then
-- sit in start order in every index keyed by run_id (runs, step_states,
-- step_tasks, events): a run's rows are written and read where the last
-- runs' were, not on a random page of each index (docs/performance.md, "Run
-- ids"). Still unguessable; they tell when a run started, as started_at
-- does. A caller may still give its own ids (start_flows' run_ids).
-- Made from gen_random_uuid's version 4: the time laid over its first 6
-- bytes, the version nibble turned from 4 to 7 (bits 52 and 53). A set of
-- n, for start_flows: one call per batch, not one per run.
-- (PostgreSQL 18 has uuidv7(); this works on the older servers too.)
CREATE FUNCTION flowworker._new_run_ids(n int)
RETURNS SETOF uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
SET search_path = ''
AS $$
    SELECT pg_catalog.encode(
        pg_catalog.set_bit(pg_catalog.set_bit(
            pg_catalog.overlay(
                pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
                pg_catalog.substr(pg_catalog.int8send(pg_catalog.floor(
                    pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::pg_catalog.int8), 3),
                1, 6),
            52, 1), 53, 1),
        'hex')::pg_catalog.uuid
    FROM pg_catalog.generate_series(1, n);
$$;

-- One, for the column's default (start_flows gives every id itself).
CREATE FUNCTION flowworker._new_run_id()
RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
SET search_path = ''
AS $$
    SELECT flowworker._new_run_ids(1);
$$;
