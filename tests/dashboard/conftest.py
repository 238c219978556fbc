"""Fixtures of the browser tests: a real `flowworker dashboard` process on
a free port, and Chromium (the system's /usr/bin/chromium, installed by
scripts/install-test-deps.sh) driven by Playwright. Never `playwright
install`: the browser comes from Debian, not from a download."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from flowworker.devdb import free_port
from tests.acceptance.harness import http_get, wait_until
from tests.cli.helpers import REPO, clean_env, command
from tests.dashboard.helpers import define_shop

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Screenshots of each page a test looked at (gitignored): what a person
# reviewing a failure, or the README's picture, starts from.
ARTIFACTS = REPO / "tests" / "artifacts" / "dashboard"

Dashboard = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def url(db_url: str) -> str:
    define_shop(db_url)
    return db_url


@contextmanager
def running_dashboard(url: str, *flags: str) -> Iterator[str]:
    """`flowworker dashboard` on a free port until the block ends; its base URL."""
    port = free_port()
    process = subprocess.Popen(
        command("dashboard", "--bind", f"127.0.0.1:{port}", *flags),
        env=clean_env({"FLOWWORKER_DATABASE_URL": url}), cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: process.poll() is not None or http_get(f"{base}/")[0] == 200,
                   timeout=30, message="the dashboard to answer")
        assert process.poll() is None, process.communicate()
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    assert process.returncode == 0, process.returncode


@pytest.fixture
def dashboard(url: str) -> Dashboard:
    """dashboard(*flags) starts one on the test's database."""
    return lambda *flags: running_dashboard(url, *flags)


# Module scope, not session: Playwright's sync API keeps an event loop
# running in the main thread until it stops, and every asyncio test after
# this directory would then fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-deps` (scripts/install-test-deps.sh)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
