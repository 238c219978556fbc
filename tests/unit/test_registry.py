"""The registry: import the app module once and collect its top-level flows."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from flowworker.errors import AppImportError, ConfigurationError
from flowworker.registry import load_flows, select_flows

WriteModule = Callable[[str], str]

TWO_FLOWS = """
    from flowworker import Context, Flow

    first = Flow("first")
    second = Flow("second")
    also_first = first  # the same object twice is one flow

    @first.step()
    def hello(data, ctx: Context):
        return data

    def factory():
        return Flow("not_top_level")  # never created at import: not collected

    flows_in_a_list = [Flow("in_a_list")]  # not a top-level Flow: not collected
"""


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WriteModule:
    """Write a module with a fresh name on sys.path; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"app_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


def test_collects_every_top_level_flow_by_slug(write_module: WriteModule) -> None:
    name = write_module(TWO_FLOWS)
    flows = load_flows(name)
    assert sorted(flows) == ["first", "second"]
    assert list(flows["first"].steps) == ["hello"]
    assert flows["first"] is sys.modules[name].first


def test_the_module_is_imported_once(write_module: WriteModule, tmp_path: Path) -> None:
    log = tmp_path / "imports.log"
    name = write_module(f"""
        from flowworker import Flow
        with open({str(log)!r}, "a") as log:
            log.write("imported\\n")
        only = Flow("only")
    """)
    assert load_flows(name)["only"] is load_flows(name)["only"]
    assert log.read_text() == "imported\n"


def test_the_working_directory_is_importable(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"cwd_app_{uuid.uuid4().hex[:12]}"
    (tmp_path / f"{name}.py").write_text("from flowworker import Flow\nhere = Flow('here')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert list(load_flows(name)) == ["here"]


def test_a_missing_module_is_an_app_import_error_of_one_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    with pytest.raises(AppImportError) as info:
        load_flows("no_such_package_xyz.flows")
    message = str(info.value)
    assert message == (
        "cannot import application module 'no_such_package_xyz.flows': "
        "No module named 'no_such_package_xyz' "
        f"(looked in the working directory {tmp_path} and PYTHONPATH=/somewhere/else; run "
        "from the folder that holds 'no_such_package_xyz', or add that folder to PYTHONPATH)")
    assert info.value.exit_code == 2


def test_a_module_that_imports_a_missing_one_names_only_that(
        write_module: WriteModule) -> None:
    name = write_module("import no_such_dependency_xyz\n")
    with pytest.raises(AppImportError) as info:
        load_flows(name)
    assert str(info.value) == (f"cannot import application module {name!r}: "
                               "No module named 'no_such_dependency_xyz'")


@pytest.mark.parametrize(("given", "suggested"), [
    ("myapp/flows.py", "try --app myapp.flows"),
    ("./myapp/flows.py", "try --app myapp.flows"),
    ("myapp/flows", "try --app myapp.flows"),
    ("flows.py", "try --app flows"),
])
def test_a_file_path_suggests_the_dotted_name(
        given: str, suggested: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AppImportError) as info:
        load_flows(given)
    assert str(info.value) == (f"--app {given!r} is a file path, but --app (FLOWWORKER_APP) "
                               f"takes a module name: {suggested}")


def test_a_path_elsewhere_suggests_pythonpath_above_its_packages(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = tmp_path / "project" / "myapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(AppImportError, match=rf"try PYTHONPATH={tmp_path / 'project'} "
                                             r"--app myapp\.flows$"):
        load_flows(str(package / "flows.py"))


def test_an_exception_while_importing_becomes_one_line(write_module: WriteModule) -> None:
    name = write_module('raise RuntimeError("first line\\nsecond line\\nthird")\n')
    with pytest.raises(AppImportError) as info:
        load_flows(name)
    assert str(info.value) == f"importing {name!r} failed: RuntimeError: first line"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_a_syntax_error_becomes_one_line(write_module: WriteModule) -> None:
    name = write_module("def broken(:\n    pass\n")
    with pytest.raises(AppImportError, match=rf"importing {name!r} failed: SyntaxError: ") as info:
        load_flows(name)
    assert "\n" not in str(info.value)


def test_a_broken_import_inside_the_app_names_the_missing_module(
        write_module: WriteModule) -> None:
    name = write_module("import no_such_dependency_xyz\n")
    with pytest.raises(AppImportError, match=r"No module named 'no_such_dependency_xyz'"):
        load_flows(name)


def test_a_definition_error_at_import_keeps_its_message(write_module: WriteModule) -> None:
    name = write_module("""
        from flowworker import Flow
        bad = Flow("bad")

        @bad.step(depends_on=["missing"])
        def late(deps, ctx):
            return None
    """)
    with pytest.raises(ConfigurationError, match=r"step 'late' depends on unknown step"):
        load_flows(name)


def test_no_module_given_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"pass --app MODULE or set FLOWWORKER_APP"):
        load_flows(None)
    with pytest.raises(ConfigurationError):
        load_flows("")


def test_a_module_without_flows_is_a_configuration_error(write_module: WriteModule) -> None:
    name = write_module("X = 1\n")
    with pytest.raises(ConfigurationError, match=r"defines no Flow at its top level"):
        load_flows(name)


def test_two_flows_with_one_slug_are_a_configuration_error(write_module: WriteModule) -> None:
    name = write_module("""
        from flowworker import Flow
        a = Flow("same")
        b = Flow("same")
    """)
    with pytest.raises(ConfigurationError, match=r"two flows are named 'same'"):
        load_flows(name)


def test_select_flows(write_module: WriteModule) -> None:
    flows = load_flows(write_module(TWO_FLOWS))
    assert [f.slug for f in select_flows(flows, None)] == list(flows)
    assert [f.slug for f in select_flows(flows, ["second"])] == ["second"]
    with pytest.raises(ConfigurationError, match=r"^unknown flow 'third' \(--flow\); the app "
                                                 r"defines: first, second$"):
        select_flows(flows, ["second", "third"])
    with pytest.raises(ConfigurationError, match=r"^unknown flow 'third' \(FLOWWORKER_FLOWS\);"):
        select_flows(flows, ["third"], "FLOWWORKER_FLOWS")
