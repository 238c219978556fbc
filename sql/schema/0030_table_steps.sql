-- Option bounds as for flows (0020); start_delay at most 30 days.
CREATE TABLE flowworker.steps (
    flow_slug text NOT NULL REFERENCES flowworker.flows (flow_slug),
    step_slug text NOT NULL,
    step_type text NOT NULL DEFAULT 'single' CHECK (step_type IN ('single', 'map', 'wait')),
    step_index int NOT NULL,
    deps_count int NOT NULL DEFAULT 0,
    max_attempts int CHECK (max_attempts BETWEEN 1 AND 1000),
    base_delay int CHECK (base_delay BETWEEN 0 AND 86400),
    timeout int CHECK (timeout BETWEEN 1 AND 604800),
    start_delay int CHECK (start_delay BETWEEN 0 AND 2592000),
    -- A wait step that is an approval gate: the options a signal must choose
    -- from, and those that fail the run.
    options text[],
    fail_on text[],
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_slug, step_slug),
    UNIQUE (flow_slug, step_index)
);
