"""The README's table of settings is the one generated from the settings
class and the commands: a field, default, description or flag changed
without `python -m flowworker.settings_table README.md` fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowworker.settings import FLAGS, Settings, env_names, flag_name
from flowworker.settings_table import BEGIN, END, commands_by_flag, table, with_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_holds_the_generated_table() -> None:
    text = README.read_text()
    assert (text.count(BEGIN), text.count(END)) == (1, 1), "the README lost its markers"
    assert text == with_table(text), (
        "README.md's settings table differs from the settings class; run "
        "`python -m flowworker.settings_table README.md`")


def test_every_setting_has_a_row_with_its_variables_and_a_description() -> None:
    rows = table().splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    for row, (field, info) in zip(rows, Settings.model_fields.items(), strict=True):
        assert info.description, f"{field} has no description"
        assert all(f"`{name}`" in row for name in env_names(field)), row


def test_each_flag_named_in_settings_exists_on_a_command() -> None:
    commands = commands_by_flag()
    for field in Settings.model_fields:
        flag = flag_name(field)
        if flag is not None:
            assert flag in commands, f"{field}: no command has {flag}"
    assert set(FLAGS) <= set(Settings.model_fields)


def test_with_table_refuses_a_text_without_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        with_table("# no table here\n")
