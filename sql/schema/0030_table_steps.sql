CREATE TABLE flowworker.steps (
    flow_slug text NOT NULL REFERENCES flowworker.flows (flow_slug),
    step_slug text NOT NULL,
    step_type text NOT NULL DEFAULT 'single' CHECK (step_type IN ('single', 'map')),
    step_index int NOT NULL,
    deps_count int NOT NULL DEFAULT 0,
    max_attempts int CHECK (max_attempts >= 1),
    base_delay int CHECK (base_delay >= 0),
    timeout int CHECK (timeout >= 1),
    start_delay int CHECK (start_delay >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_slug, step_slug),
    UNIQUE (flow_slug, step_index)
);
