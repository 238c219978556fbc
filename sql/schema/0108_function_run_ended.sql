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
