"""Install or upgrade the core schema, then apply compiled flow files."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from flowworker.db_psycopg import connect
from flowworker.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnreachableError,
    MigrateLockTimeoutError,
    SchemaError,
    ShapeMismatchError,
)
from flowworker.schema import migrations, queries, schema_sql, schema_version
from flowworker.shape import next_slug

_IN_TRANSACTION = psycopg.pq.TransactionStatus.INTRANS
_IN_ERROR = psycopg.pq.TransactionStatus.INERROR
# add_step's message (SQLSTATE 22023): "flow 'x' changed shape: step 'y' ...".
_CHANGED_SHAPE = re.compile(r"^flow '([a-z][a-z0-9_]*)' changed shape")


@dataclass(frozen=True)
class FlowFile:
    """A compiled flow file and the checksum `flow_files` records for it."""

    path: Path
    sql: str
    checksum: str

    @classmethod
    def read(cls, path: Path) -> FlowFile:
        try:
            sql = path.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise ConfigurationError(f"{path}: cannot read it as UTF-8 text: {exc}") from None
        # Line endings do not count: a checkout on Windows is the same file.
        normal = sql.replace("\r\n", "\n").encode()
        return cls(path, sql, hashlib.sha256(normal).hexdigest())


def database_version(conn: psycopg.Connection) -> int:
    """The schema version installed, 0 when there is none."""
    q = queries()
    state = conn.execute(q["schema_state"]).fetchone()
    assert state is not None
    has_schema, has_migrations = state
    if not has_schema:
        return 0
    if not has_migrations:
        raise SchemaError("schema flowworker exists but was not installed by flowworker")
    row = conn.execute(q["schema_version"]).fetchone()
    return int(row[0]) if row else 0


def migrate(database_url: str, flow_dir: Path | None = None,
            lock_timeout: float = 60.0) -> list[str]:
    """Install the schema, or apply the migrations a database lacks; then
    the `*.sql` files in flow_dir that were not applied before.

    An empty database gets the current schema in one transaction (sql/schema,
    which records every version); one at version v gets the migrations above
    v, each in a transaction of its own. One session-level advisory lock
    covers the whole call, so concurrent and repeated calls are safe; it is
    taken before anything is applied, waiting at most lock_timeout seconds.
    Flow files: see _apply_flow_files. Returns one line per thing applied
    or skipped ("applied ...", "skipped ...").
    """
    files = [FlowFile.read(path) for path in sorted(flow_dir.glob("*.sql"))] if flow_dir else []
    with connect(database_url, autocommit=True) as conn:
        _take_lock(conn, lock_timeout)
        try:
            done = _upgrade_schema(conn)
            if flow_dir is not None:
                done += _apply_flow_files(conn, files, flow_dir)
        finally:
            if not conn.closed:
                conn.execute(queries()["migrate_unlock"])
    return done


def _upgrade_schema(conn: psycopg.Connection) -> list[str]:
    current = database_version(conn)
    if current > schema_version():
        raise SchemaError(
            f"database schema is version {current}, newer than this flowworker "
            f"({schema_version()}); upgrade flowworker")
    if current == 0:
        with conn.transaction():
            _execute(conn, schema_sql(), "schema")
        return [f"applied schema version {schema_version()}"]
    done = []
    for migration in migrations():
        if migration.version > current:
            with conn.transaction():
                _execute(conn, migration.sql, f"migration {migration.version}")
            done.append(f"applied migration {migration.version:04d}_{migration.name}")
    return done


def _apply_flow_files(conn: psycopg.Connection, files: list[FlowFile],
                      flow_dir: Path) -> list[str]:
    """Apply, in name order, each file that `flow_files` does not list.

    A file is applied once: applying every file on every call let an older
    file set options that a newer one had changed. A listed file with the
    same checksum is skipped; one whose content changed is refused before
    anything is applied, since what it now says was never applied.
    """
    recorded: dict[str, tuple[str, datetime]] = {
        name: (checksum, applied_at)
        for name, checksum, applied_at in conn.execute(queries()["flow_files_applied"])}
    _refuse_edited(files, recorded, flow_dir)
    done = []
    for file in files:
        if file.path.name in recorded:
            done.append(f"skipped {file.path} (applied {_when(recorded[file.path.name][1])})")
            continue
        _apply_flow_file(conn, file)
        done.append(f"applied {file.path}")
    return done


def _refuse_edited(files: list[FlowFile], recorded: dict[str, tuple[str, datetime]],
                   flow_dir: Path) -> None:
    for file in files:
        if file.path.name not in recorded:
            continue
        checksum, applied_at = recorded[file.path.name]
        if checksum != file.checksum:
            raise SchemaError(
                f"{file.path} was edited after it was applied ({_when(applied_at)}): an applied "
                f"flow file must not change. Put it back as it was (git checkout -- "
                f"{file.path}) and run `flowworker compile --out {flow_dir}`, which writes "
                f"the change as a new file. Nothing from {flow_dir} was applied")


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _apply_flow_file(conn: psycopg.Connection, file: FlowFile) -> None:
    """The file and its `flow_files` row, in one transaction.

    The row is written first, in a transaction this opens: a compiled file
    brings its own BEGIN/COMMIT (so that psql applies it whole), and its
    BEGIN then only warns, while its COMMIT commits the row with it. A file
    without them is committed here.
    """
    what = str(file.path)
    _execute(conn, "BEGIN", what)
    _execute(conn, queries()["flow_file_record"], what, (file.path.name, file.checksum))
    _execute(conn, file.sql, what)
    if conn.info.transaction_status == _IN_TRANSACTION:
        conn.execute("COMMIT")


def _take_lock(conn: psycopg.Connection, timeout: float) -> None:
    """Wait for the migrate lock, or raise MigrateLockTimeoutError naming
    its holder. Any role that may connect can take this lock, so the wait is
    bounded. The server ends the wait (lock_timeout) rather than a client
    polling pg_try_advisory_lock: waiters keep their place in the queue and
    show in pg_locks, and the lock is taken the moment it is free."""
    q = queries()
    try:
        with conn.transaction():
            conn.execute(q["migrate_lock_timeout"], (str(max(1, round(timeout * 1000))),))
            conn.execute(q["migrate_lock"])
    except psycopg.errors.LockNotAvailable:
        raise MigrateLockTimeoutError(
            f"migrate lock not free after {timeout:g} s{_holder(conn)}") from None
    except psycopg.Error as exc:
        if conn.closed:
            raise DatabaseUnreachableError(
                f"migrate lock: connection lost: {_message(exc)}") from None
        raise DatabaseError(f"migrate lock: {_message(exc)}") from None


def _holder(conn: psycopg.Connection) -> str:
    """Who holds the migrate lock, as much of it as this role may see."""
    row = conn.execute(queries()["migrate_lock_holder"]).fetchone()
    if row is None:
        return "; its holder has let go since: run migrate again"
    pid, user, app, client, state, since, seconds, visible = row
    if pid is None:
        return ": a prepared transaction holds it (see pg_prepared_xacts)"
    who = f": pid {pid} holds it (user {user}, application_name {app!r}"
    if not visible:
        return f"{who}; its client and state are hidden from this role)"
    return f"{who}, client {client or 'local socket'}, {state} for {seconds} s since {since})"


def _execute(conn: psycopg.Connection, sql: str, what: str,
             params: tuple[str, ...] | None = None) -> None:
    try:
        conn.execute(sql.encode(), params)
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachableError(f"{what}: connection lost: {exc}") from None
    except psycopg.Error as exc:
        # The failed transaction (ours, or a file's own BEGIN) is rolled back.
        if conn.info.transaction_status == _IN_ERROR:
            conn.execute("ROLLBACK")
        shape = _CHANGED_SHAPE.match(exc.diag.message_primary or "")
        if isinstance(exc, psycopg.errors.InvalidParameterValue) and shape:
            raise ShapeMismatchError(f"{what}: {_message(exc, _new_slug(shape[1]))}") from None
        raise DatabaseError(f"{what}: {_message(exc)}") from None


def _message(exc: psycopg.Error, more: str = "") -> str:
    """The server's message and its hint, which often says what to do."""
    primary = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    hint = exc.diag.message_hint
    return f"{primary} (hint: {hint}{more})" if hint else primary


def _new_slug(slug: str) -> str:
    """How a shape change is done: a new slug beside the old one."""
    return (f", e.g. {next_slug(slug)}, served by the same worker while the runs of "
            f"{slug!r} drain; see docs/flows.md, \"Changing a flow\"")
