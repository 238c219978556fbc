-- A pgmq-style queue: one table of messages and one archive per flow.
CREATE FUNCTION flowworker.queue_create(queue_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    q text := 'q_' || flowworker.check_slug(queue_name, 'queue name');
    a text := 'a_' || queue_name;
BEGIN
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS flowworker.%I', q || '_seq');
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS flowworker.%I (
            msg_id bigint PRIMARY KEY DEFAULT nextval(%L),
            read_ct int NOT NULL DEFAULT 0,
            enqueued_at timestamptz NOT NULL DEFAULT now(),
            vt timestamptz NOT NULL DEFAULT now(),
            message jsonb NOT NULL
        )', q, 'flowworker.' || q || '_seq');
    EXECUTE format('ALTER SEQUENCE flowworker.%I OWNED BY flowworker.%I.msg_id', q || '_seq', q);
    -- The claim reads visible messages in (vt, msg_id) order and stops at LIMIT.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON flowworker.%I (vt, msg_id)', q || '_vt_idx', q);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS flowworker.%I (
            msg_id bigint PRIMARY KEY,
            read_ct int NOT NULL,
            enqueued_at timestamptz NOT NULL,
            vt timestamptz NOT NULL,
            message jsonb NOT NULL,
            archived_at timestamptz NOT NULL DEFAULT now()
        )', a);
END;
$$;
