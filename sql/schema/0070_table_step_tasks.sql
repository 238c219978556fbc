-- fillfactor 50: a task row is updated at claim and at completion, and a
-- claim updates a whole batch of neighbouring rows in one transaction, so
-- every row on a page needs room for its new version beside the old one.
-- Then both updates stay on the page (HOT), without index churn; at 80 most
-- of a batch's updates did not fit and wrote new index entries.
CREATE TABLE flowworker.step_tasks (
    run_id uuid NOT NULL,
    step_slug text NOT NULL,
    task_index int NOT NULL CHECK (task_index >= 0),
    flow_slug text NOT NULL,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'started', 'completed', 'failed', 'cancelled')),
    -- Counted at claim; the claim token handed to the worker is this number.
    attempts_count int NOT NULL DEFAULT 0 CHECK (attempts_count >= 0),
    message_id bigint NOT NULL,
    worker_id uuid,
    output jsonb,
    error_message text,
    queued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    -- A map task's element, stored when its step starts: a claim then reads
    -- a few bytes, not the whole array it came from.
    input jsonb,
    -- Its run is paused: its message is hidden (vt 'infinity') and this much
    -- of its delay was left, to be restored by resume_run.
    paused_delay interval,
    -- Attempts spent before the last retry_run. Attempt numbers (the claim
    -- token) go on counting across a retry, so that a claim from before it
    -- can never pass for one after, even when the same worker claims again;
    -- the retried task gets max_attempts more, counted from here.
    attempts_base int NOT NULL DEFAULT 0 CHECK (attempts_base >= 0),
    PRIMARY KEY (run_id, step_slug, task_index),
    UNIQUE (flow_slug, message_id),
    FOREIGN KEY (run_id, step_slug) REFERENCES flowworker.step_states (run_id, step_slug)
) WITH (fillfactor = 50);
