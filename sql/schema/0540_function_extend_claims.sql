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
