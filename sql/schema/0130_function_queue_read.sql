-- Read up to qty visible messages and hide them for vt_seconds.
CREATE FUNCTION flowworker.queue_read(queue_name text, vt_seconds int, qty int)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, vt timestamptz, message jsonb)
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH picked AS (
            SELECT q.msg_id FROM flowworker.%1$I q
            WHERE q.vt <= now()
            ORDER BY q.vt, q.msg_id
            LIMIT $2
            FOR UPDATE SKIP LOCKED
        )
        UPDATE flowworker.%1$I q
        SET vt = now() + make_interval(secs => $1), read_ct = q.read_ct + 1
        FROM picked
        WHERE q.msg_id = picked.msg_id
        RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message',
        'q_' || flowworker.check_slug(queue_name, 'queue name'))
        USING vt_seconds, qty;
END;
$$;
