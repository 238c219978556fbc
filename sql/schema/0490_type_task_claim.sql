-- One locked task inside start_tasks.
CREATE TYPE flowworker.task_claim AS (
    run_id uuid,
    step_slug text,
    task_index int,
    msg_id bigint,
    status text,
    attempts_count int,
    max_attempts int,
    timeout int,
    -- Where the locked task and message rows are: they cannot move while
    -- locked, so the claim updates them without an index lookup.
    task_tid tid,
    msg_tid tid,
    is_wait boolean  -- a wait step's deadline, not work for a worker
);
