-- Option bounds (also in create_flow/add_step, with clear messages, and in
-- flowworker.dsl): a day of retry delay, a week of timeout, 30 days of start
-- delay, 1,000 attempts. Beyond them a claim's arithmetic would overflow.
CREATE TABLE flowworker.flows (
    flow_slug text PRIMARY KEY,
    max_attempts int NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
    base_delay int NOT NULL DEFAULT 1 CHECK (base_delay BETWEEN 0 AND 86400),
    timeout int NOT NULL DEFAULT 60 CHECK (timeout BETWEEN 1 AND 604800),
    created_at timestamptz NOT NULL DEFAULT now(),
    paused_at timestamptz  -- pause_flow: none of its tasks is claimed until resume_flow
);
