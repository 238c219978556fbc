"""A newcomer's session, typed into a real shell in tmux and read off its
screen: the README's commands with a flow of their own, then a change of
the flow's options, then of its shape, and the new slug that carries it.

tmux (Debian package `tmux`) is installed by scripts/install-test-deps.sh,
which `make test` runs; missing, the test fails saying so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flowworker.schema import schema_version
from tests.acceptance.harness import as_url
from tests.cli.helpers import clean_env, psql_path

pytestmark = pytest.mark.slow

STEP_DEADLINE = 90.0  # seconds for one command; a worker's --drain is the longest

FLOWS_V1 = '''
    from flowworker import Context, Flow

    orders = Flow("orders", timeout={timeout})


    @orders.step()
    def validate(order: dict, ctx: Context) -> dict:
        return {{"order_id": order["order_id"]}}


    @orders.step(depends_on=[validate])
    def charge(deps: dict, ctx: Context) -> dict:
        return {{"paid": deps["validate"]["order_id"]}}
'''
RECEIPT = '''

    @{flow}.step(depends_on=[charge])
    def receipt(deps: dict, ctx: Context) -> dict:
        return {{"sent": deps["charge"]["paid"]}}
'''
# docs/flows.md: `orders` stays as it was, the new shape is `orders_v2`.
ORDERS_V2 = '''

    orders_v2 = Flow("orders_v2", timeout=25)
    orders_v2.step()(validate)
    orders_v2.step(depends_on=[validate])(charge)
'''


PROMPT = re.compile(r"^newcomer\[(\d+)\]\$ ?(.*)$", re.MULTILINE)  # PS1: newcomer[\#]$


@dataclass
class Terminal:
    """A shell in a tmux server of the test's own (its own socket). The
    prompt numbers the commands, so a command has finished when the prompt
    with the next number is on the screen."""

    socket: Path
    screens: list[str] = field(default_factory=list)

    def tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True,
                                text=True, timeout=30, check=True)
        return result.stdout

    def screen(self) -> str:
        """All the pane's lines, history included, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "newcomer").rstrip()

    def run(self, command: str) -> tuple[str, int]:
        """Type command, then `echo $?`: what the command printed on the
        screen, and its exit code as echo showed it."""
        out = self.type(command)
        return out, int(self.type("echo $?"))

    def type(self, command: str) -> str:
        number = self.wait_for_prompt(None)
        self.tmux("send-keys", "-t", "newcomer", "-l", command)
        self.tmux("send-keys", "-t", "newcomer", "Enter")
        self.wait_for_prompt(number + 1)
        screen = self.screen()
        lines = screen.splitlines()
        typed = f"newcomer[{number}]$ {command}"
        start = max(i for i, line in enumerate(lines) if line == typed)
        self.screens.append("\n".join(lines[start:]))
        return "\n".join(lines[start + 1:-1])

    def wait_for_prompt(self, number: int | None) -> int:
        """The number of the prompt on the last line, once it is there (and
        is `number`, when given)."""
        deadline = time.monotonic() + STEP_DEADLINE
        while True:
            screen = self.screen()
            last = PROMPT.fullmatch(screen.splitlines()[-1]) if screen else None
            if last and not last[2] and number in (None, int(last[1])):
                return int(last[1])
            if time.monotonic() > deadline:
                pytest.fail(f"no prompt {number} after {STEP_DEADLINE:g} s:\n{screen}")
            time.sleep(0.05)  # polling the screen for a condition, not waiting a time


@pytest.fixture
def terminal(tmp_path: Path, empty_db_url: str) -> Iterator[Terminal]:
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed; run scripts/install-test-deps.sh as root "
                    "(make test does)", pytrace=False)
    home = tmp_path / "shop"
    (home / "myapp").mkdir(parents=True)
    socket = tmp_path / "tmux.sock"
    rcfile = tmp_path / "bashrc"
    rcfile.write_text("PS1='newcomer[\\#]$ '\n")
    path = f"{Path(sys.executable).parent}:{Path(psql_path()).parent}:/usr/bin:/bin"
    env = clean_env({"FLOWWORKER_DATABASE_URL": as_url(empty_db_url), "PATH": path,
                     "HISTFILE": "/dev/null", "TERM": "xterm"})
    subprocess.run(["tmux", "-S", str(socket), "-f", "/dev/null", "new-session", "-d",
                    "-s", "newcomer", "-x", "200", "-y", "50", "-c", str(home),
                    f"bash --noprofile --rcfile {rcfile}"], env=env, check=True, timeout=30)
    term = Terminal(socket)
    try:
        yield term
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], check=False, timeout=30,
                       capture_output=True)


def write_app(home: Path, source: str) -> None:
    """What the newcomer writes in their editor."""
    (home / "myapp" / "__init__.py").write_text("")
    (home / "myapp" / "flows.py").write_text(textwrap.dedent(source))


def newest(folder: Path, slug: str) -> str:
    return f"migrations/{sorted(folder.glob(f'*_create_{slug}_flow.sql'))[-1].name}"


PSQL = 'psql "$FLOWWORKER_DATABASE_URL" -X -q -A -t -c'
STATUS = f"{PSQL} \"select flow_slug, status, output from flowworker.runs order by started_at\""


def start(flow: str, order_id: int) -> str:
    """The README's start_flow, typed into psql."""
    return (f"{PSQL} \"select status from flowworker.start_flow('{flow}', "
            f"'{{\\\"order_id\\\": {order_id}}}')\"")


def test_a_newcomer_changes_options_then_shape_then_slug(
        terminal: Terminal, tmp_path: Path) -> None:
    home = tmp_path / "shop"
    migrations = home / "migrations"
    write_app(home, FLOWS_V1.format(timeout=20))

    # ---------- The README, with their own flow ----------
    out, code = terminal.run("flowworker migrate")
    assert (out, code) == (f"applied schema version {schema_version()}\nschema is current", 0)
    out, code = terminal.run("flowworker compile --app myapp.flows --out migrations/")
    first = newest(migrations, "orders")
    assert (out, code) == (f"wrote {first}", 0)
    out, code = terminal.run("flowworker migrate --dir migrations/")
    assert (out, code) == (f"applied {first}\nschema is current", 0)
    out, code = terminal.run(start("orders", 42))
    assert (out, code) == ("started", 0)
    out, code = terminal.run("flowworker run --app myapp.flows --drain --metrics-addr off")
    assert code == 0, out
    assert "worker.stopped" in out, out
    assert "error" not in out.lower(), out
    out, code = terminal.run(STATUS)
    assert (out, code) == ('orders|completed|{"charge": {"paid": 42}}', 0)

    # ---------- Options: in place ----------
    write_app(home, FLOWS_V1.format(timeout=25))
    out, code = terminal.run("flowworker compile --app myapp.flows --out migrations/")
    second = newest(migrations, "orders")
    assert (out, code) == (
        f"orders: options changed since {first.removeprefix('migrations/')} (timeout 20 -> 25);"
        f" migrate applies them in place\nwrote {second}", 0)
    out, code = terminal.run("flowworker migrate --dir migrations/")
    assert code == 0, out
    assert re.fullmatch(rf"skipped {first} \(applied [^)]+\)\napplied {second}\nschema is current",
                        out), out
    out, code = terminal.run(f"{PSQL} \"select timeout from flowworker.flows\"")
    assert (out, code) == ("25", 0)
    # A run left in flight, for the shape change to meet.
    out, code = terminal.run(start("orders", 43))
    assert (out, code) == ("started", 0)

    # ---------- Shape: compile explains, migrate refuses with the hint ----------
    write_app(home, FLOWS_V1.format(timeout=25) + RECEIPT.format(flow="orders"))
    out, code = terminal.run("flowworker compile --app myapp.flows --out migrations/")
    refused = newest(migrations, "orders")
    warning, wrote = out.splitlines()
    assert code == 0
    assert warning.startswith(
        f"flowworker: warning: flow 'orders' changed shape since "
        f"{second.removeprefix('migrations/')}: step 'receipt' added. A flow cannot change "
        "shape in place once it has runs"), warning
    assert "give the new shape a new slug, e.g. Flow(\"orders_v2\")" in warning
    assert wrote == f"wrote {refused} (delete it if 'orders' has runs: migrate would refuse it)"
    out, code = terminal.run("flowworker migrate --dir migrations/")
    assert code == 4
    assert out == (
        f"flowworker: error: {refused}: flow 'orders' changed shape: step 'receipt' is new, but "
        "the flow already has runs (hint: give the changed flow a new slug, e.g. orders_v2, "
        "served by the same worker while the runs of 'orders' drain; see docs/flows.md, "
        "\"Changing a flow\")"), out

    # ---------- The new slug, served beside the old one while it drains ----------
    out, code = terminal.run(f"rm {refused}")
    assert (out, code) == ("", 0)
    write_app(home, FLOWS_V1.format(timeout=25) + ORDERS_V2 + RECEIPT.format(flow="orders_v2"))
    out, code = terminal.run("flowworker compile --app myapp.flows --out migrations/")
    v2 = newest(migrations, "orders_v2")
    assert (out, code) == (f"orders: unchanged\nwrote {v2}", 0)
    out, code = terminal.run("flowworker migrate --dir migrations/")
    assert code == 0, out
    assert out.splitlines()[-2:] == [f"applied {v2}", "schema is current"]
    out, code = terminal.run(start("orders_v2", 44))
    assert (out, code) == ("started", 0)
    out, code = terminal.run("flowworker run --app myapp.flows --drain --metrics-addr off")
    assert code == 0, out
    out, code = terminal.run(STATUS)
    assert (out, code) == ('orders|completed|{"charge": {"paid": 42}}\n'
                           'orders|completed|{"charge": {"paid": 43}}\n'
                           'orders_v2|completed|{"receipt": {"sent": 44}}', 0)
    # docs/flows.md: the old slug is drained when none of its runs is started.
    out, code = terminal.run(
        f"{PSQL} \"select status, count(*) from flowworker.runs where flow_slug = 'orders'"
        " group by status order by status\"")
    assert (out, code) == ("completed|2", 0)
