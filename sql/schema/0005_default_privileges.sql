-- Nothing in this schema is usable by PUBLIC unless granted below (0700):
-- functions are EXECUTE-able by PUBLIC by default, so take that back for
-- every function and table created from here on, queues included.
ALTER DEFAULT PRIVILEGES IN SCHEMA flowworker REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
