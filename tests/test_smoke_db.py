import psycopg

from flowworker.schema import schema_version


def test_template_has_schema(conn: psycopg.Connection) -> None:
    row = conn.execute("SELECT max(version) FROM flowworker.migrations").fetchone()
    assert row == (schema_version(),)
