"""The live UI in a real browser: headless Chromium driven by Playwright.

Real parts: Debian's /usr/bin/chromium, the vendored htmx, the app served by
werkzeug on 127.0.0.1, a SQLite file database, and the engine with the local
launcher stepped by a thread, as the controller's loop would. Nothing waits by
sleeping: every check waits on the page with a timeout.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from werkzeug.serving import make_server

from kdag import db as kdb
from kdag.logstore import open_store
from kdag.web import create_app
from tests.web.webstate import (
    FAILING,
    QUICK,
    Controller,
    add_broken_dag,
    add_dag,
    add_sync,
    gated_dag,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 20_000
SCREENSHOT = Path("/tmp/kdag-dashboard.png")
NO_RELOAD = "window.kdagNoReload = true"
STILL_NO_RELOAD = "window.kdagNoReload === true"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
)


@dataclasses.dataclass
class Site:
    url: str
    controller: Controller
    gate: Path
    chatty_gate: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The app on a free port, over DAGs with a few finished runs, kept going."""
    tmp = tmp_path_factory.mktemp("web")
    db = kdb.connect(f"sqlite:///{tmp / 'kdag.db'}")
    kdb.migrate(db)
    logs = open_store((tmp / "logs").as_uri(), spool_dir=tmp / "spool")
    controller = Controller(db, logs)

    # Some history, so the dashboard has squares of several colours.
    add_dag(db, QUICK)
    add_dag(db, FAILING)
    add_dag(db, gated_dag(tmp / "gate"))
    add_dag(db, gated_dag(tmp / "chatty-gate", name="chatty", lines_after=300))
    add_broken_dag(db, "broken", "dags/broken.yaml:4:3: unknown key 'scheudle'")
    add_sync(db, file_errors={"dags/broken.yaml": "4:3: unknown key 'scheudle'"})
    for dag in ("quick", "failing", "quick", "quick", "failing", "quick"):
        controller.run_to_end(controller.trigger(dag))

    controller.start()
    app = create_app(db=db, logs=logs, trigger=controller.trigger)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, name="test-web")
    serving.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        yield Site(url, controller, tmp / "gate", tmp / "chatty-gate")
    finally:
        server.shutdown()
        serving.join(timeout=10)
        controller.close()
        db.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield found
        found.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    yield context.new_page()
    context.close()


def test_a_triggered_run_appears_and_turns_green_without_a_reload(
    site: Site, page: Page
) -> None:
    page.goto(site.url + "/")
    page.evaluate(NO_RELOAD)

    page.click("#dag-quick button")

    # The message names the new run; its square appears first, then goes green.
    created = page.locator("#flash a")
    expect(created).to_be_visible(timeout=WAIT_MS)
    href = created.get_attribute("href")
    assert href and re.fullmatch(r"/runs/\d+", href)
    square = page.locator(f'#dag-quick a.sq[href="{href}"]')
    expect(square).to_be_attached(timeout=WAIT_MS)
    expect(page.locator("#dag-quick a.sq").first).to_have_attribute("href", href)
    expect(square).to_have_class(re.compile(r"\bs-succeeded\b"), timeout=WAIT_MS)
    assert page.evaluate(STILL_NO_RELOAD)


def test_a_failed_trigger_says_why_in_the_message(site: Site, page: Page) -> None:
    page.goto(site.url + "/")

    page.evaluate("htmx.ajax('POST', '/dags/nope/trigger', {target: '#flash'})")

    expect(page.locator("#flash .flash-error")).to_have_text(
        "Could not trigger: no DAG named 'nope'", timeout=WAIT_MS
    )


def test_the_log_of_a_running_task_grows_without_a_reload(
    site: Site, page: Page
) -> None:
    run_id = site.controller.trigger("gated")
    page.goto(f"{site.url}/runs/{run_id}")

    # The run page links the task's log as soon as its attempt exists.
    log_link = page.locator("#task-wait a.latest")
    expect(log_link).to_be_visible(timeout=WAIT_MS)
    log_link.click()
    log = page.locator("#log")
    expect(log).to_contain_text("waiting for the gate", timeout=WAIT_MS)
    page.evaluate(NO_RELOAD)
    expect(page.locator("#attempt-status .badge")).to_have_text("running")
    assert "gate opened" not in (log.text_content() or "")

    # The task prints its last line and ends: the page follows, then stops.
    site.gate.touch()
    expect(log).to_contain_text("gate opened", timeout=WAIT_MS)
    expect(page.locator("#attempt-status .badge")).to_have_text(
        "succeeded", timeout=WAIT_MS
    )
    expect(page.locator("#log-tail")).not_to_have_attribute("hx-get", re.compile(""))
    assert log.text_content() == "waiting for the gate\ngate opened\n"
    assert page.evaluate(STILL_NO_RELOAD)


def test_a_growing_log_keeps_its_newest_lines_in_view(site: Site, page: Page) -> None:
    page.set_viewport_size({"width": 1000, "height": 400})
    run_id = site.controller.trigger("chatty")
    page.goto(f"{site.url}/runs/{run_id}")
    page.locator("#task-wait a.latest").click()
    log = page.locator("#log")
    expect(log).to_contain_text("waiting for the gate", timeout=WAIT_MS)

    # 300 lines arrive, far more than the box shows: it follows them down.
    site.chatty_gate.touch()
    expect(log).to_contain_text("gate opened", timeout=WAIT_MS)
    at_end = "e => e.scrollHeight > e.clientHeight * 3 && "
    at_end += "e.scrollTop + e.clientHeight >= e.scrollHeight - 8"
    page.wait_for_function(
        f"({at_end})(document.getElementById('log'))", timeout=WAIT_MS
    )


def test_the_dashboard_looks_right(site: Site, page: Page) -> None:
    page.goto(site.url + "/")

    expect(page.locator("#dag-quick a.sq.s-succeeded").first).to_be_visible()
    expect(page.locator("#dag-failing a.sq.s-failed").first).to_be_visible()
    expect(page.locator("#dag-broken .load-error")).to_contain_text("scheudle")
    expect(page.locator(".sync .file-errors")).to_contain_text("dags/broken.yaml")
    page.screenshot(path=str(SCREENSHOT), full_page=True)
