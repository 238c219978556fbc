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
