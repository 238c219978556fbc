CREATE FUNCTION flowworker.queue_delete(queue_name text, msg_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'DELETE FROM flowworker.%I WHERE msg_id = ANY($1) RETURNING msg_id',
        'q_' || flowworker.check_slug(queue_name, 'queue name'))
        USING msg_ids;
END;
$$;
