"""The dashboard in a real browser: a real `flowworker dashboard` process
on the embedded PostgreSQL, runs made through the workers' SQL functions,
Chromium driven by Playwright. Each test waits on page selectors and
database states, never on time."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest
from playwright.sync_api import Page, expect

from flowworker.dashboard.csrf import COOKIE, FIELD
from tests.dashboard.conftest import Dashboard, screenshot
from tests.dashboard.helpers import failed_run, run_status, started_run
from tests.sql.helpers import claim, complete, define, fail, start, step_statuses
from tests.sql.signal.test_signal import define_wait, waiting_run

pytestmark = pytest.mark.slow


def test_a_failed_run_is_listed_and_its_page_draws_the_dag_and_the_error(
        url: str, dashboard: Dashboard, page: Page) -> None:
    run_id = failed_run(url)
    with dashboard() as base:
        page.goto(f"{base}/runs?status=failed")
        row = page.locator(f'tr[data-run-id="{run_id}"]')
        expect(row).to_contain_text("failed")
        expect(row).to_contain_text("card declined")
        screenshot(page, "runs-failed")

        row.get_by_role("link").click()
        expect(page).to_have_url(f"{base}/runs/{run_id}")
        dag = page.locator("svg.dag")
        expect(dag.locator('g[data-step="check"][data-status="completed"]')).to_be_visible()
        expect(dag.locator('g[data-step="charge"][data-status="failed"]')).to_be_visible()
        expect(dag.locator('g[data-step="ship"]')).to_have_attribute("data-status", "cancelled")
        expect(dag.locator("path.edge")).to_have_count(2)
        expect(page.locator("#run-status")).to_have_text("failed")
        expect(page.locator("tr[data-step=charge] pre.error-text")).to_contain_text(
            "card declined\n  at charge()")
        failed = page.locator("table.events tr", has_text="task.failed")
        expect(failed).to_contain_text("card declined")
        expect(page.locator("table.events")).to_contain_text("run.failed")
        screenshot(page, "run-failed")


def test_without_allow_actions_no_button_shows_and_a_forged_post_is_403(
        url: str, dashboard: Dashboard, page: Page) -> None:
    run_id = started_run(url)
    with dashboard() as base:
        page.goto(f"{base}/runs/{run_id}")
        expect(page.locator("#run-status")).to_have_text("started")
        expect(page.locator("header .mode")).to_have_text("read-only")
        expect(page.locator("form[method=post]")).to_have_count(0)
        expect(page.locator("#action-cancel")).to_have_count(0)
        cookie = next(c["value"] for c in page.context.cookies() if c["name"] == COOKIE)
        forged = page.request.post(f"{base}/runs/{run_id}/cancel", form={FIELD: cookie})
        assert forged.status == 403
        assert "--allow-actions" in forged.text()
        screenshot(page, "run-read-only")
    assert run_status(url, run_id) == "started"


def test_with_allow_actions_cancel_works_and_a_post_without_the_token_is_403(
        url: str, dashboard: Dashboard, page: Page) -> None:
    run_id = started_run(url)
    with dashboard("--allow-actions") as base:
        refused = page.request.post(f"{base}/runs/{run_id}/cancel", form={"x": "1"})
        assert refused.status == 403
        assert run_status(url, run_id) == "started"

        page.goto(f"{base}/runs/{run_id}")
        expect(page.locator("#action-retry")).to_have_count(0)  # a started run: no retry
        page.locator("#action-cancel").click()
        expect(page).to_have_url(f"{base}/runs/{run_id}?done=cancel")
        expect(page.locator("#run-status")).to_have_text("cancelled")
        expect(page.locator(".message")).to_have_text("Cancelled.")
        expect(page.locator("#action-cancel")).to_have_count(0)
        screenshot(page, "run-cancelled")
    assert run_status(url, run_id) == "cancelled"


def test_with_allow_actions_retry_starts_a_failed_run_again(
        url: str, dashboard: Dashboard, page: Page) -> None:
    run_id = failed_run(url)
    with dashboard("--allow-actions") as base:
        page.goto(f"{base}/runs/{run_id}")
        expect(page.locator("#action-cancel")).to_have_count(0)  # a failed run: no cancel
        page.locator("#action-retry").click()
        expect(page).to_have_url(f"{base}/runs/{run_id}?done=retry")
        expect(page.locator("#run-status")).to_have_text("started")
        expect(page.locator("table.events")).to_contain_text("run.retried")
        expect(page.locator('svg.dag g[data-step="check"]')).to_have_attribute(
            "data-status", "completed")  # completed steps keep their outputs
        screenshot(page, "run-retried")
    assert run_status(url, run_id) == "started"


def test_with_allow_actions_pause_and_resume(url: str, dashboard: Dashboard,
                                             page: Page) -> None:
    run_id = started_run(url)
    with dashboard("--allow-actions") as base:
        page.goto(f"{base}/runs/{run_id}")
        page.locator("#action-pause").click()
        expect(page.locator("#run-status")).to_have_text("paused")
        assert run_status(url, run_id) == "paused"
        expect(page.locator("#action-pause")).to_have_count(0)
        page.locator("#action-resume").click()
        expect(page.locator("#run-status")).to_have_text("started")
    assert run_status(url, run_id) == "started"


def test_with_allow_actions_a_waiting_step_is_signalled_with_a_payload(
        url: str, dashboard: Dashboard, page: Page) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        define_wait(conn, "approve")
        run_id = waiting_run(conn, "approve")
    with dashboard("--allow-actions") as base:
        page.goto(f"{base}/runs/{run_id}")
        expect(page.locator('svg.dag g[data-step="approval"]')).to_have_attribute(
            "data-status", "waiting")
        form = page.locator("form.signal")
        form.locator("textarea[name=payload]").fill('{"approved_by": "ops"}')
        form.get_by_role("button", name="Signal").click()
        expect(page).to_have_url(f"{base}/runs/{run_id}?done=signal")
        expect(page.locator('svg.dag g[data-step="approval"]')).to_have_attribute(
            "data-status", "completed")
        expect(page.locator("form.signal")).to_have_count(0)
    with psycopg.connect(url, autocommit=True) as conn:
        assert step_statuses(conn, run_id)["approval"] == "completed"
        output = conn.execute("SELECT output FROM flowworker.step_states WHERE run_id = %s "
                              "AND step_slug = 'approval'", (run_id,)).fetchone()
    assert output == ({"approved_by": "ops"},)


def map_run(url: str) -> uuid.UUID:
    """A run of `fulfil` whose map step `pick` had 15 elements: 12 done,
    one failed (which failed the run), the other two cancelled."""
    with psycopg.connect(url, autocommit=True) as conn:
        define(conn, "fulfil", {"validate": [], "pick": ["validate"], "notify": ["validate"],
                                "pack": ["pick"], "ship": ["pack", "notify"]},
               maps=("pick",), max_attempts=1)
        run_id = start(conn, "fulfil", {"order": 7})
        (task,) = claim(conn, "fulfil")
        complete(conn, task, list(range(15)))
        tasks = claim(conn, "fulfil", batch_size=20)
        picks = sorted((t for t in tasks if t.step_slug == "pick"), key=lambda t: t.task_index)
        assert len(picks) == 15
        for task in [t for t in tasks if t.step_slug == "notify"] + picks[:12]:
            complete(conn, task, {"ok": True})
        fail(conn, picks[12], "shelf B7 is empty\nTraceback (most recent call last): ...")
    return run_id


def test_a_map_step_shows_its_counts_and_the_tasks_their_attempts(
        url: str, dashboard: Dashboard, page: Page) -> None:
    run_id = map_run(url)
    with dashboard() as base:
        page.goto(f"{base}/runs/{run_id}")
        pick = page.locator('svg.dag g[data-step="pick"]')
        expect(pick).to_have_attribute("data-status", "failed")
        expect(pick.locator("text.counts")).to_have_text("12/15 done, 1 failed")
        expect(page.locator("svg.dag path.edge")).to_have_count(5)
        failed = page.locator("table.tasks tr", has=page.locator("pre.error-text"))
        expect(failed).to_have_count(1)
        expect(failed).to_contain_text(re.compile(r"pick\s+12\s+failed\s+1"))
        expect(failed).to_contain_text("shelf B7 is empty")
        screenshot(page, "run-map")
        # The README's picture (docs/images/dashboard-run.png) is this one.
        screenshot(page, "run-map-top", full_page=False)


def test_overview_flows_and_workers_pages(url: str, dashboard: Dashboard, page: Page) -> None:
    failed_run(url)
    started_run(url)
    worker_id = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT flowworker.register_worker(%s, 'shop', 'box-1', 4242)",
                     (worker_id,))
    with dashboard("--allow-actions") as base:
        page.goto(f"{base}/")
        shop = page.locator("table tr", has=page.locator('a[href="/runs?flow=shop"]'))
        expect(shop).to_contain_text("shop")
        page.locator('a[href="/runs?flow=shop&status=failed"]').click()
        expect(page.locator("table.runs tbody tr")).to_have_count(1)
        page.go_back()
        screenshot(page, "overview")

        page.goto(f"{base}/workers")
        row = page.locator("tr", has_text=str(worker_id))
        expect(row).to_contain_text("box-1")
        expect(row).to_contain_text("live")
        screenshot(page, "workers")

        page.goto(f"{base}/flows")
        page.locator('form[action="/flows/shop/pause"] button').click()
        expect(page.locator(".message")).to_have_text("Flow paused.")
        # The row says so, and offers resume instead of pause.
        shop = page.locator("tr", has=page.locator('a[href="/runs?flow=shop"]'))
        expect(shop.locator(".st-paused")).to_have_text("paused")
        expect(shop.locator('form[action="/flows/shop/pause"]')).to_have_count(0)
        expect(shop.locator('form[action="/flows/shop/resume"]')).to_have_count(1)
        screenshot(page, "flows")
    with psycopg.connect(url, autocommit=True) as conn:
        row_paused = conn.execute("SELECT paused_at IS NOT NULL FROM flowworker.flows "
                                  "WHERE flow_slug = 'shop'").fetchone()
    assert row_paused == (True,)


def test_the_runs_list_refreshes_itself(url: str, dashboard: Dashboard, page: Page) -> None:
    """htmx (vendored; the page loads nothing from elsewhere) reloads the list."""
    first = started_run(url)
    with dashboard() as base:
        page.goto(f"{base}/runs")
        expect(page.locator(f'tr[data-run-id="{first}"]')).to_have_count(1)
        url_before = page.url
        second = started_run(url)
        expect(page.locator(f'tr[data-run-id="{second}"]')).to_have_count(1, timeout=15_000)
        assert page.url == url_before  # no navigation: the list was swapped in place
