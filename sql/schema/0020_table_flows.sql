CREATE TABLE flowworker.flows (
    flow_slug text PRIMARY KEY,
    max_attempts int NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    base_delay int NOT NULL DEFAULT 1 CHECK (base_delay >= 0),
    timeout int NOT NULL DEFAULT 60 CHECK (timeout >= 1),
    created_at timestamptz NOT NULL DEFAULT now()
);
