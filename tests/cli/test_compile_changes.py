"""`flowworker compile --out`: what changed since the flow's last file, said
before it reaches the database."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cli.helpers import SHOP, run_cli, user_app

# The same flow with a step added after `pack`.
SHOP_WITH_LABEL = SHOP + """
    @shop.step(depends_on=[pack])
    def label(deps, ctx):
        return None
"""
# `pack` gone, `label` in its place, on `pick`.
SHOP_REWIRED = """
    from flowworker import Flow

    shop = Flow("shop", timeout=20)

    @shop.step()
    def pick(order, ctx):
        return order

    @shop.map(over=pick)
    def label(item, ctx):
        return None
"""


def compile_app(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    env = user_app(tmp_path / "app", "shop_app", source)
    return run_cli("compile", "--app", "shop_app", "--out", str(tmp_path / "flows"), env=env)


def newest(tmp_path: Path) -> Path:
    return sorted((tmp_path / "flows").iterdir())[-1]


def test_an_options_change_says_migrate_applies_it_in_place(tmp_path: Path) -> None:
    assert compile_app(tmp_path, SHOP.format(timeout=20)).returncode == 0
    first = newest(tmp_path)
    result = compile_app(tmp_path, SHOP.format(timeout=25))
    second = newest(tmp_path)
    assert second != first
    assert (result.returncode, result.stderr) == (0, (
        f"shop: options changed since {first.name} (timeout 20 -> 25); "
        f"migrate applies them in place\nwrote {second}\n"))


def test_an_added_step_is_explained_as_a_shape_change(tmp_path: Path) -> None:
    assert compile_app(tmp_path, SHOP.format(timeout=20)).returncode == 0
    first = newest(tmp_path)
    result = compile_app(tmp_path, SHOP_WITH_LABEL.format(timeout=20))
    second = newest(tmp_path)
    assert result.returncode == 0, result.stderr
    warning, wrote = result.stderr.splitlines()
    assert warning == (
        f"flowworker: warning: flow 'shop' changed shape since {first.name}: step 'label' "
        "added. A flow cannot change shape in place once it has runs: migrate adds steps only "
        "while 'shop' has no runs (else exit 4). Keep 'shop' as it was until its runs have "
        "drained and give the new shape a new slug, e.g. Flow(\"shop_v2\") (docs/flows.md, "
        "\"Changing a flow\")")
    assert wrote == f"wrote {second} (delete it if 'shop' has runs: migrate would refuse it)"
    assert "'label', deps => ARRAY['pack']" in second.read_text()


def test_removed_and_rewired_steps_are_named(tmp_path: Path) -> None:
    assert compile_app(tmp_path, SHOP.format(timeout=20)).returncode == 0
    result = compile_app(tmp_path, SHOP_REWIRED)
    assert result.returncode == 0, result.stderr
    warning = result.stderr.splitlines()[0]
    assert ": step 'label' added, step 'pack' removed. " in warning
    assert "a removed step stays in the database, and workers then refuse the flow" in warning


def test_a_file_compile_did_not_write_is_not_compared(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    own = flows / "20240101000000_create_shop_flow.sql"
    own.write_text("SELECT flowworker.create_flow('shop');\n")
    result = compile_app(tmp_path, SHOP.format(timeout=20))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"shop: {own.name} was not written by flowworker compile; not compared")
