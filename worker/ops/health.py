"""Is the database there, and does its schema fit this flowworker?"""

from __future__ import annotations

from flowworker.db_psycopg import connect
from flowworker.errors import (
    ConfigurationError,
    DatabaseUnreachableError,
    FlowworkerError,
    SchemaError,
)
from flowworker.migrator import database_version
from flowworker.ops.db import fetch_one, mapped_errors
from flowworker.ops.models import Health
from flowworker.schema import incompatibility, schema_version

NOT_INSTALLED = "flowworker schema is not installed; run `flowworker migrate`"


def health(database_url: str) -> Health:
    """The database answers and its schema is one this code's workers may
    run against (flowworker.schema.incompatibility). Either problem is
    reported, not raised, so a probe can tell them apart by exit_code; a
    malformed URL still raises ConfigurationError (exit 2)."""
    expected = schema_version()
    try:
        with connect(database_url, autocommit=True) as conn, mapped_errors(conn):
            version = database_version(conn)
            # min_worker_version exists from schema version 2 on.
            min_worker = int(fetch_one(conn, "min_worker_version")[0]) if version >= 2 else 1
    except DatabaseUnreachableError as exc:
        return Health(False, False, None, expected, str(exc), exc.exit_code)
    except ConfigurationError:
        raise
    except FlowworkerError as exc:
        return Health(False, True, None, expected, str(exc), exc.exit_code)
    if version == 0:
        return Health(False, True, None, expected, NOT_INSTALLED, SchemaError.exit_code)
    problem = incompatibility(version, min_worker)
    return Health(problem is None, True, version, expected, problem,
                  SchemaError.exit_code if problem else 0)
