"""RELIABILITY B7: a bad database URL exits 2 (3 when its host is unknown)
with one line, never a traceback and never any part of the password, for
`migrate` (psycopg) and `run` (asyncpg) alike."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.cli.helpers import assert_one_error_line, run_cli

# A test password; no 4 characters of it occur in any message by chance.
SECRET = "Zq7xW3kP9vJm"  # noqa: S105
HOST = "127.0.0.1"

BAD_URLS = [
    pytest.param(f"postgresql://u:{SECRET}%zz@{HOST}/db", 2, id="bad-percent-encoding"),
    pytest.param(f"postgresql://u:{SECRET}%00@{HOST}/db", 2, id="percent-encoded-nul"),
    pytest.param(f"postgresql://u:{SECRET}@{HOST}:notaport/db", 2, id="non-numeric-port"),
    pytest.param(f"postgresql://u:{SECRET}@{HOST}:99999/db", 2, id="port-out-of-range"),
    pytest.param(f"postgresql://u:{SECRET}@{HOST}:0/db", 2, id="port-zero"),
    pytest.param(f"postgresql://u:{SECRET}@{HOST}/db?sslmode=bogus", 2, id="unknown-sslmode"),
    pytest.param(f"postgresql://u:{SECRET}@[::1/db", 2, id="unterminated-ipv6"),
    pytest.param("postgresql://[::1", 2, id="garbage"),
    # Unencoded '/' or '@' in the password: libpq would read pieces of it
    # as the port, host or database name.
    pytest.param(f"postgresql://u:{SECRET[:6]}/{SECRET[6:]}@{HOST}/db", 2, id="slash-in-password"),
    pytest.param(f"postgresql://u:{SECRET[:6]}@{SECRET[6:]}@{HOST}/db", 2, id="at-in-password"),
    pytest.param(f"postgresql://u:{SECRET[:6]}?{SECRET[6:]}@{HOST}:x/db", 2, id="question-mark"),
    pytest.param(f"host={HOST} port=x password={SECRET}", 2, id="keyword-bad-port"),
    pytest.param(f"host={HOST} password={SECRET[:6]} {SECRET[6:]}", 2, id="keyword-unquoted"),
    pytest.param(f"postgresql://u:{SECRET}@{HOST}:1/db?target_session_attrs=bogus", 2,
                 id="option-refused-when-connecting"),
    pytest.param(f"postgresql://u:{SECRET}@no-such-host.invalid/db", 3, id="unknown-host"),
]

COMMANDS = {
    "migrate": ["migrate"],
    "run": ["run", "--app", "examples.orders", "--metrics-addr", "off"],
}


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    """Not the password, nor any 4 characters of it in a row."""
    output = result.stdout + result.stderr
    pieces = {SECRET[i:i + 4] for i in range(len(SECRET) - 3)}
    shown = sorted(piece for piece in pieces if piece in output)
    assert not shown, f"password pieces {shown} in: {output!r}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize(("url", "code"), BAD_URLS)
def test_a_bad_database_url_is_one_line_without_the_password(
        command: str, url: str, code: int) -> None:
    result = run_cli(*COMMANDS[command], "--database-url", url)
    line = assert_one_error_line(result, code)
    assert_no_secret(result)
    expected = "invalid database URL" if code == 2 else "database unreachable"
    assert expected in line


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_database_url_from_the_environment(command: str) -> None:
    url = f"postgresql://u:{SECRET}%zz@{HOST}/db"
    result = run_cli(*COMMANDS[command], env={"FLOWWORKER_DATABASE_URL": url})
    assert "invalid database URL" in assert_one_error_line(result, 2)
    assert_no_secret(result)


def test_a_password_with_url_delimiters_works_with_both_drivers(
        db_url: str, tmp_path: Path) -> None:
    # '?', '#' and ':' need no encoding for libpq; asyncpg, handed the URL as
    # typed, would end the host at the '?' and read a piece of the password
    # as the port. (The test server trusts local logins: this checks where
    # each driver connects, not the password.)
    params = conninfo_to_dict(db_url)
    url = (f"postgresql://{params['user']}:{SECRET[:4]}?{SECRET[4:8]}#{SECRET[8:]}:x"
           f"@{params['host']}:{params['port']}/{params['dbname']}")
    compiled = run_cli("compile", "--app", "examples.orders", "--out", str(tmp_path))
    assert compiled.returncode == 0, compiled.stderr
    migrated = run_cli("migrate", "--database-url", url, "--dir", str(tmp_path))
    assert migrated.returncode == 0, migrated.stderr
    ran = run_cli(*COMMANDS["run"], "--drain", "--database-url", url)
    assert ran.returncode == 0, ran.stderr
    assert_no_secret(ran)
