-- fillfactor 50, as for step_tasks: batches of neighbouring rows are
-- updated in one transaction (started, then counted off), and need room
-- on their page for HOT updates.
CREATE TABLE flowworker.step_states (
    run_id uuid NOT NULL REFERENCES flowworker.runs (run_id),
    step_slug text NOT NULL,
    flow_slug text NOT NULL,
    status text NOT NULL DEFAULT 'created'
        CHECK (status IN ('created', 'started', 'waiting', 'completed', 'failed', 'timed_out',
                          'skipped', 'cancelled')),
    remaining_deps int NOT NULL CHECK (remaining_deps >= 0),
    remaining_tasks int CHECK (remaining_tasks >= 0),
    initial_tasks int CHECK (initial_tasks >= 0),
    output jsonb,
    error_message text,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    -- A wait step: the token a signal may carry instead of (run, step), fresh
    -- each time the step starts waiting, and since when it waits.
    wait_token uuid,
    waiting_at timestamptz,
    PRIMARY KEY (run_id, step_slug),
    FOREIGN KEY (flow_slug, step_slug) REFERENCES flowworker.steps (flow_slug, step_slug)
) WITH (fillfactor = 50);

CREATE UNIQUE INDEX step_states_wait_token_idx ON flowworker.step_states (wait_token)
    WHERE wait_token IS NOT NULL;
