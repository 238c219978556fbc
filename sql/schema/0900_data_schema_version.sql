-- The schema version this tree installs; workers refuse any other.
INSERT INTO flowworker.migrations (version, name) VALUES (1, 'initial');
