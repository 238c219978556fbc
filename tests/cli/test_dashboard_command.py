"""`flowworker dashboard` refusing to start: one line, the documented exit
code. (Serving is tested in tests/dashboard and tests/faults.)"""

from __future__ import annotations

from pathlib import Path

from flowworker.devdb import free_port
from tests.cli.helpers import assert_one_error_line, run_cli


def test_without_the_extra_it_says_what_to_install(db_url: str, tmp_path: Path) -> None:
    # A starlette that cannot be imported, first on the path: as when the
    # extra was never installed.
    (tmp_path / "starlette").mkdir()
    (tmp_path / "starlette" / "__init__.py").write_text(
        'raise ImportError("No module named \'starlette\'")\n')
    result = run_cli("dashboard", env={"FLOWWORKER_DATABASE_URL": db_url,
                                       "PYTHONPATH": str(tmp_path)})
    line = assert_one_error_line(result, 2)
    assert line == ("flowworker: error: the dashboard needs its extra: "
                    "pip install 'flowworker[dashboard]'")


def test_an_unreachable_database_exits_3_before_serving() -> None:
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    result = run_cli("dashboard", "--bind", f"127.0.0.1:{free_port()}",
                     env={"FLOWWORKER_DATABASE_URL": url})
    assert_one_error_line(result, 3)


def test_a_port_out_of_range_exits_2(db_url: str) -> None:
    line = assert_one_error_line(run_cli("dashboard", "--bind", "127.0.0.1:70000",
                                         env={"FLOWWORKER_DATABASE_URL": db_url}), 2)
    assert "--bind '127.0.0.1:70000'" in line
