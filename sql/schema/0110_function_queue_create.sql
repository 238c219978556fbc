-- A pgmq-style queue: one table of messages and one archive per flow.
-- The queue is q_<slug> and the archive a_<slug>; everything else derived
-- from the slug ends in '$...', a character no slug contains, so no flow's
-- sequence or index can take the name of another flow's queue or archive
-- (with q_<slug>_seq, flows x and x_seq would both want q_x_seq).
CREATE FUNCTION flowworker.queue_create(queue_name text)
RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
    q pg_catalog.text := 'q_' || flowworker.check_slug(queue_name, 'queue name');
    a pg_catalog.text := 'a_' || queue_name;
BEGIN
    EXECUTE format('CREATE SEQUENCE IF NOT EXISTS flowworker.%I', q || '$seq');
    -- fillfactor 50: a claim moves a message's vt, an indexed column, so the
    -- update is never HOT; with room on its page the new version stays
    -- there, and the update need not lock the old row and move it away
    -- (one more WAL record per claim, and scattered rows, at 100).
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS flowworker.%I (
            msg_id bigint CONSTRAINT %I PRIMARY KEY DEFAULT nextval(%L),
            read_ct int NOT NULL DEFAULT 0,
            enqueued_at pg_catalog.timestamptz NOT NULL DEFAULT now(),
            vt pg_catalog.timestamptz NOT NULL DEFAULT now(),
            message pg_catalog.jsonb NOT NULL
        ) WITH (fillfactor = 50)', q, q || '$pkey', format('flowworker.%I', q || '$seq'));
    EXECUTE format('ALTER SEQUENCE flowworker.%I OWNED BY flowworker.%I.msg_id', q || '$seq', q);
    -- The claim reads visible messages in (vt, msg_id) order and stops at LIMIT.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON flowworker.%I (vt, msg_id)', q || '$vt', q);
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS flowworker.%I (
            msg_id bigint CONSTRAINT %I PRIMARY KEY,
            read_ct int NOT NULL,
            enqueued_at pg_catalog.timestamptz NOT NULL,
            vt pg_catalog.timestamptz NOT NULL,
            message pg_catalog.jsonb NOT NULL,
            archived_at pg_catalog.timestamptz NOT NULL DEFAULT now()
        )', a, a || '$pkey');
END;
$$;
