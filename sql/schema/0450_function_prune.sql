-- Retention: delete what ended longer than older_than ago, one short batch
-- per call. Call it again until it returns 0 (`flowworker prune` and
-- `flowworker run --prune-after` do); each call is its own transaction
-- when called on its own, so no lock is held for longer than one batch.
--
-- A batch is at most batch_size runs that ended (completed, failed or
-- cancelled; the time is the latest of completed_at, failed_at and
-- cancelled_at) before now() - older_than, oldest started first, each with
-- its tasks, their queue messages (archived, or any left queued) and its
-- step states and events; then, with what is left of batch_size, workers stopped, or
-- silent (no heartbeat), for longer than older_than. Returns how many rows
-- of runs and workers it deleted.
--
-- A run that has not ended is never touched, whatever its age; a run that
-- another transaction holds is skipped (SKIP LOCKED) and left for a later
-- call. Runs are locked first, then what lies below them is deleted
-- (0000_schema.sql, "Locks").
--
-- A function, not a procedure that commits between batches: a procedure
-- that is SECURITY DEFINER or pins search_path cannot commit, and a
-- function also works inside a caller's transaction (psql, a cron job).
-- flowworker_operator may call it (0700_roles.sql).
CREATE FUNCTION flowworker.prune(older_than interval, batch_size int DEFAULT 1000)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
-- Plans: rows by key only (see "Plans" in 0000_schema.sql); a plan cached
-- while runs was small must not scan it whole once it is large.
SET enable_seqscan = off
AS $$
#variable_conflict use_column
DECLARE
    v_cutoff pg_catalog.timestamptz;
    v_left int := prune.batch_size;
    v_flow pg_catalog.text;
    v_runs pg_catalog.uuid[];
    v_msgs bigint[];
    v_workers bigint;
BEGIN
    -- ==================== GUARD ====================
    IF prune.older_than IS NULL OR prune.older_than <= pg_catalog.make_interval()
       OR prune.batch_size IS NULL OR prune.batch_size NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'prune: older_than must be more than 0 and batch_size 1..100000, not % and %',
            coalesce(prune.older_than::pg_catalog.text, 'NULL'),
            coalesce(prune.batch_size::pg_catalog.text, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    v_cutoff := now() - prune.older_than;

    -- ==================== RUNS, ONE FLOW AT A TIME ====================
    FOR v_flow IN SELECT f.flow_slug FROM flowworker.flows f ORDER BY f.flow_slug LOOP
        -- ---------- Ended before the cutoff, locked ----------
        -- A run ends after it starts, so runs_flow_started_idx bounds the
        -- scan; status is checked again on the locked row.
        SELECT array_agg(x.run_id) INTO v_runs
        FROM (SELECT r.run_id FROM flowworker.runs r
              WHERE r.flow_slug = v_flow AND r.started_at < v_cutoff
                AND r.status IN ('completed', 'failed', 'cancelled')
                AND greatest(r.completed_at, r.failed_at, r.cancelled_at) < v_cutoff
              ORDER BY r.started_at
              LIMIT v_left
              FOR UPDATE SKIP LOCKED) AS x;
        CONTINUE WHEN v_runs IS NULL;

        -- ---------- Their tasks, and the tasks' messages ----------
        WITH gone AS (
            DELETE FROM flowworker.step_tasks t WHERE t.run_id = ANY (v_runs)
            RETURNING t.message_id
        )
        SELECT array_agg(g.message_id) INTO v_msgs FROM gone g;
        IF v_msgs IS NOT NULL THEN
            EXECUTE format('DELETE FROM flowworker.%I WHERE msg_id = ANY ($1)',
                           'a_' || flowworker.check_slug(v_flow, 'flow slug'))
                USING v_msgs;
            EXECUTE format('DELETE FROM flowworker.%I WHERE msg_id = ANY ($1)', 'q_' || v_flow)
                USING v_msgs;
        END IF;

        -- ---------- Their history and step states, then the runs ----------
        DELETE FROM flowworker.events e WHERE e.run_id = ANY (v_runs);
        DELETE FROM flowworker.step_states ss WHERE ss.run_id = ANY (v_runs);
        DELETE FROM flowworker.runs r WHERE r.run_id = ANY (v_runs);

        v_left := v_left - cardinality(v_runs);
        EXIT WHEN v_left = 0;
    END LOOP;

    -- ==================== WORKERS ====================
    IF v_left > 0 THEN
        WITH gone AS (
            DELETE FROM flowworker.workers w
            WHERE w.worker_id IN (
                SELECT o.worker_id FROM flowworker.workers o
                WHERE coalesce(o.stopped_at, o.last_heartbeat_at) < v_cutoff
                LIMIT v_left
                FOR UPDATE SKIP LOCKED)
            RETURNING 1
        )
        SELECT count(*) INTO v_workers FROM gone;
        v_left := v_left - v_workers;
    END IF;
    RETURN prune.batch_size - v_left;
END;
$$;
