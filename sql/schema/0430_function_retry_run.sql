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
