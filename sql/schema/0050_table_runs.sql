-- fillfactor 50, and status only in one partial index (0052): a run's row
-- is updated as its steps finish, and with room on its page and no indexed
-- column changed the new version stays on the page (HOT), without new index
-- entries, until the update that ends the run. Runs of a flow are found by
-- (flow_slug, started_at), which never change.
CREATE TABLE flowworker.runs (
    run_id uuid PRIMARY KEY DEFAULT flowworker._new_run_id(),  -- time-ordered (0045)
    flow_slug text NOT NULL REFERENCES flowworker.flows (flow_slug),
    status text NOT NULL DEFAULT 'started'
        CHECK (status IN ('started', 'paused', 'completed', 'failed', 'cancelled')),
    input jsonb NOT NULL,
    output jsonb,
    error_message text,
    remaining_steps int NOT NULL DEFAULT 0 CHECK (remaining_steps >= 0),
    started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    failed_at timestamptz,
    cancelled_at timestamptz,
    paused_at timestamptz,
    cancel_reason text  -- what cancel_run was told, if anything
) WITH (fillfactor = 50);

CREATE INDEX runs_flow_started_idx ON flowworker.runs (flow_slug, started_at);
