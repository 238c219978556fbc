"""S2: roles. Login roles granted flowworker_enqueuer, flowworker_worker or
flowworker_reader, and a `nobody` with only what PUBLIC has, connect for real
and try everything: each may do exactly what its group grants and nothing
else; no table is writable by any of them; nothing in the schema is
EXECUTE-able by PUBLIC; SECURITY DEFINER functions pin search_path and cannot
be steered by the caller's own temporary types."""

from __future__ import annotations

import re
import uuid
from importlib import resources
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from flowworker.devdb import FAST_SETTINGS, LocalCluster
from flowworker.migrator import migrate
from flowworker.schema import queries, schema_version
from tests.faults.sql.conftest import KINDS, Logins
from tests.sql.helpers import (
    ack,
    assert_invariants,
    claim,
    complete,
    define,
    expire,
    fail,
    release,
    run_row,
    start,
    tasks,
)

CORE_TABLES = {"migrations", "config", "flows", "steps", "deps", "runs", "step_states",
               "step_tasks", "workers", "events", "flow_files"}
# What each role may SELECT and EXECUTE in schema flowworker; `None` is everything.
READS: dict[str, set[str] | None] = {
    "enqueuer": {"runs", "step_states", "step_tasks"},
    "worker": {"migrations", "flows", "steps", "deps", "runs", "config"},
    "reader": None,
    "operator": {"runs", "step_states", "step_tasks", "events", "flows", "steps", "deps"},
    "nobody": set(),
}
EXECUTES: dict[str, set[str]] = {
    "enqueuer": {"start_flow", "start_flows", "cancel_run"},
    "worker": {"start_tasks", "complete_task", "fail_task", "ack_tasks", "release_tasks",
               "extend_claims", "register_worker", "heartbeat_worker", "stop_worker",
               "queue_metrics"},
    "reader": set(),
    "operator": {"cancel_run", "retry_run", "pause_run", "resume_run", "pause_flow",
                 "resume_flow", "signal", "signal_token", "prune"},
    "nobody": set(),
}


# --- what the catalog says ---------------------------------------------------

def test_catalog_grants_are_exactly_the_contract(conn: psycopg.Connection,
                                                 logins: Logins) -> None:
    define(conn, "late", {"a": []})  # queue tables made after the roles and grants
    tables = {r[0] for r in conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = 'flowworker'::regnamespace "
        "AND relkind = 'r'").fetchall()}
    assert CORE_TABLES | {"q_late", "a_late"} <= tables
    for kind, role in logins.names.items():
        readable = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'flowworker'::regnamespace "
            "AND relkind = 'r' AND has_table_privilege(%s, oid, 'SELECT')", (role,)).fetchall()}
        assert readable == (READS[kind] if READS[kind] is not None else tables), kind
        writable = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'flowworker'::regnamespace "
            "AND (relkind = 'r' AND has_table_privilege(%(r)s, oid, "
            "     'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') "
            "  OR relkind = 'S' AND has_sequence_privilege(%(r)s, oid, 'USAGE, UPDATE'))",
            {"r": role}).fetchall()
        assert writable == [], kind
        executable = {r[0] for r in conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'flowworker'::regnamespace "
            "AND has_function_privilege(%s, oid, 'EXECUTE')", (role,)).fetchall()}
        assert executable == EXECUTES[kind], kind
        schema = conn.execute(
            "SELECT has_schema_privilege(%(r)s, 'flowworker', 'USAGE'), "
            "has_schema_privilege(%(r)s, 'flowworker', 'CREATE')", {"r": role}).fetchone()
        assert schema == (kind != "nobody", False), kind


def test_nothing_is_granted_to_public(conn: psycopg.Connection) -> None:
    define(conn, "late", {"a": []})
    public_functions = conn.execute("""
        SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = 'flowworker'::regnamespace
          AND (has_function_privilege('public', p.oid, 'EXECUTE')
               OR EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl,
                                                             acldefault('f', p.proowner))) a
                          WHERE a.grantee = 0))""").fetchall()
    assert public_functions == []
    public_relations = conn.execute("""
        SELECT c.relname FROM pg_class c
        WHERE c.relnamespace = 'flowworker'::regnamespace
          AND EXISTS (SELECT 1 FROM aclexplode(coalesce(c.relacl, acldefault(
                          CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
                      WHERE a.grantee = 0)""").fetchall()
    assert public_relations == []
    public_schema = conn.execute("""
        SELECT 1 FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
        WHERE n.nspname = 'flowworker' AND a.grantee = 0""").fetchall()
    assert public_schema == []


def test_security_definer_functions_pin_search_path(conn: psycopg.Connection) -> None:
    rows = conn.execute("""
        SELECT p.proname, p.proconfig FROM pg_proc p
        WHERE p.pronamespace = 'flowworker'::regnamespace AND p.prosecdef""").fetchall()
    assert {name for name, _ in rows} == set().union(*EXECUTES.values()), (
        "every function a role may call runs with the owner's rights, and no other does")
    unpinned = [name for name, config in rows if 'search_path=""' not in (config or [])]
    assert unpinned == []


# --- what each role can really do ----------------------------------------------

def calls_with_null_arguments(conn: psycopg.Connection) -> dict[str, str]:
    """proname -> a call of it with a typed NULL for every argument."""
    rows = conn.execute("""
        SELECT p.proname, format('SELECT %s(%s)', p.oid::regproc, coalesce((
            SELECT string_agg(format('NULL::%s', format_type(a.t, NULL)), ', ' ORDER BY a.i)
            FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i)), ''))
        FROM pg_proc p WHERE p.pronamespace = 'flowworker'::regnamespace""").fetchall()
    return dict(rows)


def relations(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("""
            SELECT c.relname AS name, c.relkind AS kind, c.oid::regclass::text AS qualified,
                   (SELECT a.attname FROM pg_attribute a  -- one an UPDATE may name
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND a.attidentity = ''
                    ORDER BY a.attnum LIMIT 1) AS column
            FROM pg_class c WHERE c.relnamespace = 'flowworker'::regnamespace
              AND c.relkind IN ('r', 'S')""").fetchall()


def denied(conn: psycopg.Connection, statement: str | sql.SQL | sql.Composed,
           params: tuple[Any, ...] | None = None) -> bool:
    """Whether the statement was refused for want of a privilege. Any other
    outcome, an error from inside a function included, means it got past
    the privilege checks."""
    try:
        conn.execute(statement, params)
    except psycopg.errors.InsufficientPrivilege:
        return True
    except psycopg.Error:
        return False
    return False


@pytest.mark.parametrize("kind", KINDS)
def test_each_role_can_do_exactly_what_it_is_granted(
        conn: psycopg.Connection, logins: Logins, kind: str) -> None:
    define(conn, "late", {"a": []})
    start(conn, "late")
    everything = calls_with_null_arguments(conn)
    rels = relations(conn)
    assert {"start_flow", "start_tasks", "complete_task", "create_flow", "add_step",
            "check_slug", "queue_create", "_fail_run"} <= set(everything)
    with logins.connect(kind) as c:
        # Every function it was granted gets past the checks (with NULL
        # arguments each one refuses or does nothing); every other is refused.
        allowed_calls = {name for name, call in everything.items() if not denied(c, call)}
        assert allowed_calls == EXECUTES[kind], kind
        # It reads what it was granted and nothing else; it writes nothing.
        for rel in rels:
            name = sql.Identifier("flowworker", rel["name"])
            if rel["kind"] == "S":
                assert denied(c, "SELECT nextval(%s::regclass)", (rel["qualified"],))
                assert denied(c, "SELECT setval(%s::regclass, 1)", (rel["qualified"],))
                continue
            may_read = READS[kind] is None or rel["name"] in (READS[kind] or set())
            assert denied(c, sql.SQL("SELECT 1 FROM {} LIMIT 0").format(name)) != may_read, (
                kind, rel["name"])
            column = sql.Identifier(rel["column"])
            for write in (sql.SQL("INSERT INTO {} DEFAULT VALUES"),
                          sql.SQL("UPDATE {} SET {col} = {col} WHERE false"),
                          sql.SQL("DELETE FROM {} WHERE false"),
                          sql.SQL("TRUNCATE {}")):
                statement = write.format(name, col=column)
                assert denied(c, statement), (kind, statement.as_string(c))
    assert conn.execute("SELECT count(*) FROM flowworker.runs").fetchone() == (1,)


# --- the grants are enough: a whole run as enqueuer + worker ------------------

def worker_query_names() -> list[str]:
    text = resources.files("flowworker.sql").joinpath("queries/worker.sql").read_text()
    return re.findall(r"^-- name: ([a-z_][a-z0-9_]*)\s*$", text, re.MULTILINE)


class WorkerQueries:
    """The worker's own queries (sql/queries/worker.sql, asyncpg style $n
    parameters) prepared on a psycopg connection, run with literal arguments."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.cur = psycopg.ClientCursor(conn)
        self.used: set[str] = set()
        for name in worker_query_names():
            conn.execute(f"PREPARE fw_{name} AS {queries()[name]}")

    def __call__(self, name: str, *args: Any) -> list[tuple[Any, ...]]:
        self.used.add(name)
        placeholders = ", ".join(["%s"] * len(args))
        self.cur.execute(f"EXECUTE fw_{name}" + (f"({placeholders})" if args else ""), args)
        return self.cur.fetchall()


def test_a_whole_run_as_enqueuer_and_worker(conn: psycopg.Connection, logins: Logins) -> None:
    define(conn, "roles", {"a": [], "b": ["a"], "c": ["b"]}, maps=("b",))
    client = queries()
    worker_id = uuid.uuid4()
    with logins.connect("enqueuer") as enq, logins.connect("worker") as wrk:
        q = WorkerQueries(wrk)
        assert q("schema_present") == [(True,)]
        assert q("listen_check") == [(1,)]
        assert q("notify", "flowworker_roles_probe") == [("",)]
        assert q("max_output_bytes") == [(1048576,)]
        [(oldest,)] = q("min_worker_version")
        assert 1 <= oldest <= schema_version()
        assert sorted(q("flow_shape", "roles")) == [
            ("a", "single", []), ("b", "map", ["a"]), ("c", "single", ["b"])]
        assert q("register_worker", worker_id, "roles", "host", 1234) == [(worker_id,)]

        with enq.cursor(row_factory=dict_row) as cur:
            run = cur.execute(client["client_start_flow"],
                              {"flow_slug": "roles", "input": Jsonb({"n": 3}),
                               "run_id": None}).fetchone()
            doomed = cur.execute(client["client_start_flow"],
                                 {"flow_slug": "roles", "input": Jsonb({"n": 0}),
                                  "run_id": None}).fetchone()
            assert run is not None
            assert doomed is not None
            cancelled = cur.execute(client["client_cancel_run"],
                                    {"run_id": doomed["run_id"], "reason": "a test"}).fetchone()
            assert cancelled is not None
            assert cancelled["status"] == "cancelled"
        run_id = run["run_id"]
        assert q("finished_runs", [run_id, doomed["run_id"]]) == [(doomed["run_id"],)]

        # Renew one claim, hand it back and take it again, then work the run to its end.
        (first,) = q("start_tasks", "roles", worker_id, 10, 5)
        assert q("extend_claims", "roles", [first[1]], [first[2]], [first[3]], [first[4]],
                 30, [worker_id]) == [(1,)]
        assert q("run_inputs", [first[1]]) == [(first[1], {"n": 3}, ANY)]
        assert q("release_tasks", [first[1]], [first[2]], [first[3]], [first[4]],
                 [worker_id]) == [(1,)]
        outputs: dict[str, Any] = {}
        while claimed := q("start_tasks", "roles", worker_id, 10, 5):
            assert q("heartbeat_worker", worker_id) == [(True,)]
            (length, _visible, _age, _paused), = q("queue_metrics", "roles")
            assert q("flow_paused", "roles") == [(False,)]
            assert length >= len(claimed)
            results: list[Any] = []
            for (_msg, _run, step, _index, _attempt, task_input, _flow_input, _fetch,
                 _timeout, _isolated, _waited) in claimed:
                if step == "a":
                    results.append(list(range(1, task_input["n"] + 1)))
                elif step == "b":
                    results.append(task_input * 10)
                else:
                    results.append(sum(task_input["b"]))
            acked = q("ack_tasks", [c[1] for c in claimed], [c[2] for c in claimed],
                      [c[3] for c in claimed], [c[4] for c in claimed],
                      [Jsonb(r) for r in results], [None] * len(claimed),
                      [worker_id] * len(claimed), [None] * len(claimed),
                      [False] * len(claimed), False)
            assert sorted(acked) == [(i + 1, "completed", None, None, None)
                                     for i in range(len(claimed))]
            for c, r in zip(claimed, results, strict=True):
                outputs.setdefault(c[2], []).append(r)
        q("stop_worker", worker_id)
        assert q("heartbeat_worker", worker_id) == [(False,)]
        assert q.used == set(worker_query_names()), "a worker query was never tried"

        with enq.cursor(row_factory=dict_row) as cur:
            final = cur.execute(client["client_get_run"], {"run_id": run_id}).fetchone()
            assert final is not None
            assert (final["status"], final["output"]) == ("completed", {"c": 60})
            steps = cur.execute("SELECT step_slug, status FROM flowworker.step_states "
                                "WHERE run_id = %s ORDER BY step_slug", (run_id,)).fetchall()
            assert [(s["step_slug"], s["status"]) for s in steps] == [
                ("a", "completed"), ("b", "completed"), ("c", "completed")]
            done = cur.execute("SELECT count(*) AS n FROM flowworker.step_tasks "
                               "WHERE run_id = %s AND status = 'completed'", (run_id,)).fetchone()
            assert done == {"n": 5}
    assert outputs == {"a": [[1, 2, 3]], "b": [10, 20, 30], "c": [60]}
    assert_invariants(conn, "roles")


# --- the caller's temporary schema cannot steer a SECURITY DEFINER function ---

TRAP = """
    CREATE FUNCTION pg_temp.trap() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'a temporary type shadowing a built-in ran as %', current_user;
    END $$"""


def shadow_builtin_types(conn: psycopg.Connection) -> int:
    """Create, in this session's pg_temp, a domain named like every type in
    pg_catalog whose CHECK raises. With search_path = '' PostgreSQL searches
    pg_temp first for type names, so a function that says `text` or `record`
    without pg_catalog would pick these up and run the caller's code with its
    owner's rights."""
    names = [r[0] for r in conn.execute(
        "SELECT typname::pg_catalog.text FROM pg_catalog.pg_type "
        "WHERE typnamespace = 'pg_catalog'::pg_catalog.regnamespace "
        "AND typname !~ '^_'").fetchall()]
    conn.execute(TRAP)
    for name in names:
        conn.execute(sql.SQL("CREATE DOMAIN pg_temp.{} AS pg_catalog.text "
                             "CHECK (pg_temp.trap())").format(sql.Identifier(name)))
    return len(names)


def test_temporary_types_cannot_steer_security_definer_functions(
        conn: psycopg.Connection, logins: Logins) -> None:
    define(conn, "shadow", {"a": [], "b": ["a"], "c": ["b"]}, maps=("b",), base_delay=0)
    define(conn, "lost", {"a": []}, max_attempts=1)
    worker = uuid.uuid4()
    with logins.connect("enqueuer") as enq, logins.connect("worker") as wrk:
        assert shadow_builtin_types(enq) > 50
        assert shadow_builtin_types(wrk) > 50
        # The shadows are live: an unqualified type name in these sessions is ours.
        with pytest.raises(psycopg.errors.RaiseException, match="shadowing a built-in"):
            enq.execute("SELECT 'x'::text")

        # Enqueuer: start (root map over a dependency's output), cancel.
        run_id = start(enq, "shadow", {"n": 2})
        doomed = start(enq, "shadow", {"n": 1})
        lost_run = start(enq, "lost")
        assert enq.execute("SELECT status FROM flowworker.cancel_run(%s)",
                           (doomed,)).fetchone() == ("cancelled",)

        # Worker: every granted function, every path through them.
        wrk.execute("SELECT flowworker.register_worker(%s, 'shadow', 'host', 1)", (worker,))
        assert wrk.execute("SELECT flowworker.heartbeat_worker(%s)",
                           (worker,)).fetchone() == (True,)
        (a,) = claim(wrk, "shadow", worker=worker)
        assert release(wrk, [a]) == 1
        (a,) = claim(wrk, "shadow", worker=worker)
        assert wrk.execute(
            "SELECT flowworker.extend_claims('shadow', %s, %s, %s, %s, 30, %s)",
            ([a.run_id], [a.step_slug], [a.task_index], [a.attempt], [a.worker])).fetchone() == (1,)
        assert fail(wrk, a, "once") == "retry"
        (a,) = claim(wrk, "shadow", worker=worker)
        assert complete(wrk, a, [5, 6])
        bs = claim(wrk, "shadow", worker=worker)
        assert ack(wrk, bs, [50, None], [None, "flaky"]) == ["completed", "retry"]
        (b1,) = claim(wrk, "shadow", worker=worker)
        assert ack(wrk, [b1], [60], [None]) == ["completed"]
        (c,) = claim(wrk, "shadow", worker=worker)
        assert c.input == {"b": [50, 60]}
        assert complete(wrk, c, "done")
        assert wrk.execute("SELECT queue_length FROM flowworker.queue_metrics('shadow')"
                           ).fetchone() == (0,)
        # A claim lost on its last attempt fails its run inside start_tasks.
        (lost,) = claim(wrk, "lost", worker=worker)
        expire(conn, "lost", [lost.msg_id])
        assert claim(wrk, "lost", worker=worker) == []
        wrk.execute("SELECT flowworker.stop_worker(%s)", (worker,))

    assert run_row(conn, run_id)["status"] == "completed"
    assert run_row(conn, run_id)["output"] == {"c": "done"}
    assert run_row(conn, doomed)["status"] == "cancelled"
    assert run_row(conn, lost_run)["status"] == "failed"
    assert [t["status"] for t in tasks(conn, lost_run)] == ["failed"]
    assert_invariants(conn, "shadow")
    assert_invariants(conn, "lost")


# --- installing without CREATEROLE --------------------------------------------

@pytest.mark.slow
def test_install_without_createrole_still_revokes_public_execute(tmp_path: Path) -> None:
    """A migrator that may not create roles gets a notice and no roles, but
    the schema it installs must still not be callable by PUBLIC. Needs a
    cluster of its own: the group roles must not exist yet."""
    cluster = LocalCluster(tmp_path / "pg", settings=FAST_SETTINGS)
    cluster.start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute("CREATE ROLE migrator LOGIN NOCREATEROLE")
            admin.execute("CREATE DATABASE app OWNER migrator")
            admin.execute("CREATE ROLE somebody LOGIN")
        url = make_conninfo(cluster.url("app"), user="migrator")
        migrate(url)
        with psycopg.connect(url, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM pg_roles "
                             "WHERE rolname LIKE 'flowworker\\_%'").fetchone() == (0,)
            public = c.execute("""
                SELECT p.oid::regprocedure::text FROM pg_proc p
                WHERE p.pronamespace = 'flowworker'::regnamespace
                  AND has_function_privilege('public', p.oid, 'EXECUTE')""").fetchall()
            assert public == []
            # Even once an administrator lets a role into the schema, it may
            # call nothing until granted.
            c.execute("GRANT USAGE ON SCHEMA flowworker TO somebody")
        with psycopg.connect(make_conninfo(cluster.url("app"), user="somebody"),
                             autocommit=True) as somebody:
            for call in ("SELECT flowworker.start_flow('x')",
                         "SELECT * FROM flowworker.start_tasks('x', gen_random_uuid())"):
                assert denied(somebody, call), call
    finally:
        cluster.stop("immediate")
