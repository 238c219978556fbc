"""pyproject.toml ships every SQL folder as a package of its own (setuptools
warns about, and may one day leave out, an importable folder not listed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_sql_folder_is_a_listed_package_with_its_files() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = sorted(p.parent.name for p in (REPO / "sql").glob("*/*.sql"))
    assert folders, "no SQL files found"
    for folder in set(folders):
        package = f"flowworker.sql.{folder}"
        assert package in config["packages"], f"{package} is not listed in packages"
        assert config["package-data"].get(package) == ["*.sql"], package
