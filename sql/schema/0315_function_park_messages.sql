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
