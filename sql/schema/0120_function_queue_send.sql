-- Send messages, visible after delay_seconds; NOTIFY when they are visible now.
CREATE FUNCTION flowworker.queue_send(queue_name text, messages jsonb[], delay_seconds int DEFAULT 0)
RETURNS SETOF bigint
LANGUAGE plpgsql
SET search_path = ''
AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'INSERT INTO flowworker.%I (vt, message)
         SELECT now() + make_interval(secs => $2), m FROM unnest($1) AS m
         RETURNING msg_id', 'q_' || flowworker.check_slug(queue_name, 'queue name'))
        USING messages, delay_seconds;
    IF delay_seconds <= 0 THEN
        PERFORM flowworker.queue_notify(queue_name);
    END IF;
END;
$$;
