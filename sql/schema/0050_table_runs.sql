CREATE TABLE flowworker.runs (
    run_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    flow_slug text NOT NULL REFERENCES flowworker.flows (flow_slug),
    status text NOT NULL DEFAULT 'started'
        CHECK (status IN ('started', 'completed', 'failed', 'cancelled')),
    input jsonb NOT NULL,
    output jsonb,
    error_message text,
    remaining_steps int NOT NULL DEFAULT 0 CHECK (remaining_steps >= 0),
    started_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    failed_at timestamptz,
    cancelled_at timestamptz
) WITH (fillfactor = 80);

CREATE INDEX runs_flow_status_idx ON flowworker.runs (flow_slug, status);
