-- A data-free hint. PostgreSQL folds identical notifications within one
-- transaction, so a queue is notified at most once per transaction.
-- flowworker.config 'notify' = 0 turns notifications off.
CREATE FUNCTION flowworker.queue_notify(queue_name text)
RETURNS void
LANGUAGE sql
SET search_path = ''
AS $$
    SELECT pg_notify('flowworker_' || queue_name, '')
    FROM flowworker.config c WHERE c.name = 'notify' AND c.value <> 0;
$$;
