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
