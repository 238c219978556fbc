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
