CREATE TABLE flowworker.deps (
    flow_slug text NOT NULL,
    dep_slug text NOT NULL,
    step_slug text NOT NULL,
    PRIMARY KEY (flow_slug, step_slug, dep_slug),
    FOREIGN KEY (flow_slug, dep_slug) REFERENCES flowworker.steps (flow_slug, step_slug),
    FOREIGN KEY (flow_slug, step_slug) REFERENCES flowworker.steps (flow_slug, step_slug),
    CHECK (dep_slug <> step_slug)
);

CREATE INDEX deps_dependents_idx ON flowworker.deps (flow_slug, dep_slug);
