"""RELIABILITY S9: what a client can do to `flowworker dashboard` over HTTP,
against a real database (starlette's TestClient drives the app in process).

An unknown or malformed run id is a 404 page, not a traceback; an action
is refused (403) without --allow-actions, without the CSRF token, with a
token that is not the cookie's or not signed by this process, and leaves
the run as it was; error messages and step slugs holding HTML are shown as
text; a role that may only read sees every page and is told, on an action,
that it lacks the permission; payloads show only with --show-payloads; a
Host header other than the loopback names is refused (DNS rebinding).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from starlette.testclient import TestClient

from flowworker.dashboard.app import create_app
from flowworker.dashboard.config import DashboardConfig
from flowworker.dashboard.csrf import COOKIE, FIELD
from tests.dashboard.helpers import (
    define_shop,
    drop_role,
    failed_run,
    reader_url,
    run_status,
    started_run,
)

BASE = "http://127.0.0.1:8080"
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>"
PAGES = ("/", "/runs", "/flows", "/workers")


@pytest.fixture
def url(db_url: str) -> str:
    define_shop(db_url)
    return db_url


@contextmanager
def dashboard(url: str, *, allow_actions: bool = False,
              show_payloads: bool = False) -> Iterator[TestClient]:
    config = DashboardConfig(url, allow_actions=allow_actions, show_payloads=show_payloads)
    with TestClient(create_app(config), base_url=BASE, raise_server_exceptions=False,
                    follow_redirects=False) as client:
        yield client


def token_of(client: TestClient, path: str) -> str:
    """The CSRF token a page's forms carry (its cookie is now in the client)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(rf'name="{FIELD}" value="([^"]+)"', page.text)
    assert found, "no form with a CSRF token on the page"
    return found.group(1)


def assert_error_page(text: str) -> None:
    assert "Traceback" not in text
    assert "<h1>" in text


@pytest.mark.parametrize("run_id", [str(uuid.uuid4()), "nope", "12345",
                                    "%3Cscript%3Ealert(1)"])
def test_s9_an_unknown_or_malformed_run_is_a_404_page(url: str, run_id: str) -> None:
    with dashboard(url) as client:
        page = client.get(f"/runs/{run_id}")
    assert page.status_code == 404
    assert_error_page(page.text)
    assert "<script>alert" not in page.text


def test_s9_actions_are_refused_without_allow_actions(url: str) -> None:
    run_id = started_run(url)
    with dashboard(url) as client:
        page = client.get(f"/runs/{run_id}")
        assert 'action="/runs/' not in page.text  # no action form shown
        cookie = client.cookies[COOKIE]  # a token this process signed, in the cookie
        refused = client.post(f"/runs/{run_id}/cancel", data={FIELD: cookie})
    assert refused.status_code == 403
    assert "--allow-actions" in refused.text
    assert run_status(url, run_id) == "started"


def test_s9_actions_need_the_csrf_token_of_the_cookie(url: str) -> None:
    run_id = started_run(url)
    with dashboard(url, allow_actions=True) as client:
        token = token_of(client, f"/runs/{run_id}")
        assert client.cookies[COOKIE] == token  # double submit: the form repeats the cookie
        forged = "AAAAAAAAAAAAAAAAAAAAAAAA." + "0" * 64  # well formed, not signed by us
        cancel = f"/runs/{run_id}/cancel"
        assert client.post(cancel).status_code == 403  # no token at all
        assert client.post(cancel, data={FIELD: ""}).status_code == 403
        assert client.post(cancel, data={FIELD: token + "x"}).status_code == 403
        client.cookies.set(COOKIE, forged)
        assert client.post(cancel, data={FIELD: forged}).status_code == 403
        assert run_status(url, run_id) == "started"
        client.cookies.set(COOKIE, token)
        done = client.post(cancel, data={FIELD: token})
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/runs/{run_id}?done=cancel"
    assert run_status(url, run_id) == "cancelled"


def test_s9_a_token_from_another_process_is_refused(url: str) -> None:
    run_id = started_run(url)
    with dashboard(url, allow_actions=True) as first:
        token = token_of(first, f"/runs/{run_id}")
    with dashboard(url, allow_actions=True) as second:
        second.cookies.set(COOKIE, token)
        refused = second.post(f"/runs/{run_id}/cancel", data={FIELD: token})
    assert refused.status_code == 403
    assert run_status(url, run_id) == "started"


def test_s9_html_in_an_error_message_and_a_step_slug_is_text(url: str) -> None:
    run_id = failed_run(url, HOSTILE)
    with psycopg.connect(url, autocommit=True) as conn:
        # The table itself does not check slugs (add_step does): a row
        # written by hand, or by a future bug, must still render as text.
        conn.execute("INSERT INTO flowworker.steps (flow_slug, step_slug, step_index) "
                     "VALUES ('shop', %s, 3)", (HOSTILE,))
        conn.execute("INSERT INTO flowworker.deps (flow_slug, dep_slug, step_slug) "
                     "VALUES ('shop', 'ship', %s)", (HOSTILE,))
    with dashboard(url) as client:
        pages = [client.get(f"/runs/{run_id}"), client.get("/runs")]
    for page in pages:
        assert page.status_code == 200
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    run_page = pages[0].text
    assert run_page.count("&lt;img src=x onerror=alert(1)&gt;") >= 4  # error, slug
    assert re.search(r'<g class="step st-created" data-step="&lt;script&gt;', run_page)


def test_s9_a_role_that_may_only_read_sees_pages_and_is_told_on_an_action(url: str) -> None:
    run_id = started_run(url)
    role = f"dash_r_{uuid.uuid4().hex[:8]}"
    try:
        with dashboard(reader_url(url, role), allow_actions=True) as client:
            for path in (*PAGES, f"/runs/{run_id}"):
                assert client.get(path).status_code == 200, path
            token = token_of(client, f"/runs/{run_id}")
            refused = client.post(f"/runs/{run_id}/cancel", data={FIELD: token})
    finally:
        drop_role(url, role)
    assert refused.status_code == 403
    assert "Traceback" not in refused.text
    assert (f"permission denied: the database role {role} may not run "
            "flowworker.cancel_run (cancel)") in refused.text
    assert "this one can only read" in refused.text
    assert run_status(url, run_id) == "started"


def test_s9_payloads_show_only_with_show_payloads(url: str) -> None:
    run_id = failed_run(url)
    with dashboard(url) as client:
        hidden = client.get(f"/runs/{run_id}").text
    with dashboard(url, show_payloads=True) as client:
        shown = client.get(f"/runs/{run_id}").text
    assert "4242" not in hidden
    assert "--show-payloads" in hidden
    assert '"card": "4242"' in shown


def test_s9_another_host_name_is_refused(url: str) -> None:
    with dashboard(url) as client:
        assert client.get("/", headers={"host": "127.0.0.1:8080"}).status_code == 200
        rebound = client.get("/", headers={"host": "attacker.example:8080"})
    assert rebound.status_code == 400


def test_s9_bad_list_filters_are_a_400_page(url: str) -> None:
    with dashboard(url) as client:
        for query in ("status=bogus", "since=banana", "limit=0", "limit=x"):
            page = client.get(f"/runs?{query}")
            assert page.status_code == 400, query
            assert_error_page(page.text)
        unknown = client.get("/runs?flow=nosuchflow")
    assert unknown.status_code == 404


def flow_paused(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT paused_at IS NOT NULL FROM flowworker.flows "
                           "WHERE flow_slug = 'shop'").fetchone()
    assert row is not None
    return bool(row[0])


def test_s9_flow_pause_and_resume_take_the_same_guards(url: str) -> None:
    with dashboard(url) as client:
        page = client.get("/flows").text
        assert "/flows/shop/pause" not in page  # no flow action shown
        assert "<form" not in page
        cookie = client.cookies[COOKIE]
        assert client.post("/flows/shop/pause", data={FIELD: cookie}).status_code == 403
    with dashboard(url, allow_actions=True) as client:
        assert 'action="/flows/shop/pause"' in client.get("/flows").text
        token = token_of(client, "/flows")
        assert client.post("/flows/shop/pause").status_code == 403
        assert not flow_paused(url)
        assert client.post("/flows/shop/pause", data={FIELD: token}).status_code == 303
        assert flow_paused(url)
        unknown = client.post("/flows/nosuchflow/pause", data={FIELD: token})
        assert unknown.status_code == 404
        assert "nosuchflow" in unknown.text
        assert client.post("/flows/shop/resume", data={FIELD: token}).status_code == 303
    assert not flow_paused(url)


def test_s9_a_bad_signal_is_a_message_not_a_500(url: str) -> None:
    run_id = started_run(url)
    with dashboard(url, allow_actions=True) as client:
        token = token_of(client, "/flows")
        signal = f"/runs/{run_id}/signal"
        not_json = client.post(signal, data={FIELD: token, "step_slug": "check",
                                             "payload": "{nope"})
        not_wait = client.post(signal, data={FIELD: token, "step_slug": "check"})
        no_step = client.post(signal, data={FIELD: token, "step_slug": "<b>nope</b>"})
    assert not_json.status_code == 400
    assert "the payload is not JSON" in not_json.text
    assert not_wait.status_code == 409
    assert "not a wait step" in not_wait.text
    assert no_step.status_code == 404
    assert "&lt;b&gt;nope&lt;/b&gt;" in no_step.text
    assert run_status(url, run_id) == "started"
