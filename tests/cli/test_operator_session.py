"""An operator's session, through the CLI only, against a real PostgreSQL
and a real worker: start a run, watch its step fail, find it and read the
error, set the fix, retry it and see it complete, all scripted through --json."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import run_cli

APP = "tests.apps.operator"


class Operator:
    """Runs `flowworker ...` against one database, as a script would."""

    def __init__(self, url: str) -> None:
        self.env = {"FLOWWORKER_DATABASE_URL": url}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = run_cli(*args, env=self.env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.mark.slow
def test_a_failing_step_seen_and_read_through_the_cli(db_url: str, tmp_path: Path) -> None:
    op = Operator(db_url)
    op("compile", "--app", APP, "--out", str(tmp_path / "flows"))
    op("migrate", "--dir", str(tmp_path / "flows"))
    assert [f["flow_slug"] for f in op.json("flows", "list")["flows"]] == ["checkout"]

    order = tmp_path / "order.json"
    order.write_text(json.dumps({"items": ["a", "b", "c"], "flag": str(tmp_path / "flag")}))
    run_id = op.json("start", "checkout", "--input", f"@{order}")["run_id"]
    (flow,) = op.json("status")["flows"]
    assert flow["runs"]["started"] == 1
    assert flow["queue"]["visible"] == 1

    # A worker works the run until nothing is left: charge fails twice (its
    # two attempts), so the run fails.
    op("run", "--app", APP, "--flow", "checkout", "--drain", "--metrics-addr", "off")

    failed = op.json("runs", "list", "--status", "failed")["runs"]
    assert [r["run_id"] for r in failed] == [run_id]
    declined = "RuntimeError: card declined: the flag is not set"
    assert failed[0]["error_message"] == f"step charge failed: attempt 2 of 2: {declined}"

    detail = op.json("runs", "show", run_id)
    steps = {s["step_slug"]: s for s in detail["steps"]}
    assert detail["run"]["status"] == "failed"
    assert (steps["charge"]["status"], steps["charge"]["attempts"]) == ("failed", 2)
    assert steps["charge"]["last_error"] == f"attempt 2 of 2: {declined}"
    assert steps["validate"]["status"] == "completed"
    assert steps["ship"]["status"] == "cancelled"
    assert steps["ship"]["depends_on"] == ["charge", "pack"]
    pack = steps["pack"]
    assert pack["step_type"] == "map"
    assert pack["tasks"]["total"] in (0, 3)  # packed before or after charge failed

    shown = op("runs", "show", run_id).stdout
    assert f"run {run_id}  flow checkout  failed" in shown
    assert f"error: step charge failed: attempt 2 of 2: {declined}" in shown
    charge_line = next(line for line in shown.splitlines() if "── charge " in line)
    assert charge_line.split()[2:4] == ["failed", "2"]
    assert charge_line.endswith(f"attempt 2 of 2: {declined}")

    (worker,) = op.json("workers", "list")["workers"]
    assert worker["state"] == "stopped"
    (flow,) = op.json("status")["flows"]
    assert (flow["runs"]["failed"], flow["runs"]["started"], flow["queue"]["depth"]) == (1, 0, 0)
    op("healthcheck")

    # The fix: the flag is set. The run is retried from where it stopped
    # and a worker finishes it; what had completed is not run again.
    (tmp_path / "flag").touch()
    retried = op.json("runs", "retry", run_id)
    assert (retried["status"], retried["retried"]) == ("started", True)
    op("run", "--app", APP, "--flow", "checkout", "--drain", "--metrics-addr", "off")
    detail = op.json("runs", "show", run_id)
    assert detail["run"]["status"] == "completed"
    steps = {s["step_slug"]: s for s in detail["steps"]}
    assert {slug: s["status"] for slug, s in steps.items()} == dict.fromkeys(
        ["validate", "items", "pack", "charge", "ship"], "completed")
    assert (steps["validate"]["attempts"], steps["charge"]["attempts"]) == (1, 3)
    assert detail["output"] == {"ship": {"boxes": 3}}
    history = [e["event"] for e in detail["events"]]
    assert history[0] == "run.started"
    assert history[-3:] == ["run.failed", "run.retried", "run.completed"]
    assert history.count("task.failed") == 2
    shown = op("runs", "show", run_id).stdout
    assert "run.retried" in shown
    # Retrying a completed run is refused, naming its status; nothing changes.
    again = run_cli("runs", "retry", run_id, env=op.env)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1, again.stderr
    assert "completed" in again.stderr, again.stderr
