-- Move messages to the archive table, keeping them for inspection.
CREATE FUNCTION flowworker.queue_archive(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'WITH gone AS (
            DELETE FROM flowworker.%I WHERE msg_id = ANY($1)
            RETURNING msg_id, read_ct, enqueued_at, vt, message
        )
        INSERT INTO flowworker.%I (msg_id, read_ct, enqueued_at, vt, message)
        SELECT msg_id, read_ct, enqueued_at, vt, message FROM gone
        ON CONFLICT (msg_id) DO NOTHING
        RETURNING msg_id',
        'q_' || flowworker.check_slug(queue_name, 'queue name'), 'a_' || queue_name)
        USING msg_ids;
END;
$$;
