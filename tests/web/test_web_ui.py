"""The server-rendered pages and their live fragments, through Flask's client.

Real parts: SQLite and PostgreSQL, the engine, the local launcher and the file
log store. The browser side of htmx is tested in test_web_browser.py.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from flask.testing import FlaskClient

from kdag.errors import NotFound
from kdag.logstore import LogStore
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

HTMX = {"HX-Request": "true"}


def text_of(client: FlaskClient, url: str, status: int = 200) -> str:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def poll_url(html: str, element_id: str) -> str | None:
    """Return the URL the live element `element_id` polls, or None if it does not."""
    match = re.search(rf'<div id="{element_id}"[^>]*>', html)
    assert match, f"no element {element_id} in the page"
    url = re.search(r'hx-get="([^"]+)"', match.group(0))
    return url.group(1).replace("&amp;", "&") if url else None


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def log_or_nothing(logs: LogStore, key: str) -> bytes:
    try:
        return logs.read(key)
    except NotFound:  # the task has not opened its log file yet
        return b""


def test_the_dashboard_shows_dags_schedules_runs_and_errors(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK)
    add_dag(db, FAILING)
    add_broken_dag(db, "broken", "dags/broken.yaml:3:1: unknown key 'scheudle'")
    add_sync(
        db,
        file_errors={
            "dags/broken.yaml": "dags/broken.yaml:3:1: unknown key 'scheudle'",
            "dags/odd.yaml": "not a file git can read",
        },
    )
    first = controller.trigger("quick")
    controller.run_to_end(first)
    second = controller.trigger("quick")

    html = text_of(client, "/")

    assert '<a href="/dags/quick">quick</a>' in html
    assert "<code>0 6 * * 1-5</code> America/New_York" in html
    assert "At 06:00 AM, Monday through Friday" in html
    assert re.search(
        r'class="muted small next-run">next \d{4}-\d\d-\d\dT1[01]:00:00Z', html
    )
    squares = re.findall(r'<a class="sq s-(\w+)" href="/runs/(\d+)"', html)
    assert squares == [("queued", str(second)), ("succeeded", str(first))]
    assert f'title="Run {first} · succeeded · ' in html
    assert 'hx-post="/dags/quick/trigger"' in html
    assert (
        '<pre class="error load-error">dags/broken.yaml:3:1: unknown key '
        "&#39;scheudle&#39;</pre>" in html
    )
    assert "Synced <code>3f2a9c1d5e7b</code> of main" in html
    # Each file error names its file once.
    assert html.count("dags/broken.yaml:3:1: unknown key") == 2  # sync + DAG row
    assert '<pre class="message">dags/odd.yaml: not a file git can read</pre>' in html


def test_the_dashboard_shows_as_many_runs_as_configured(
    db: sa.Engine, logs: LogStore, controller: Controller
) -> None:
    add_dag(db, QUICK)
    ids = [controller.trigger("quick") for _ in range(4)]
    app = create_app(db=db, logs=logs, trigger=controller.trigger, runs_shown=3)

    html = text_of(app.test_client(), "/")

    shown = re.findall(r'class="sq s-\w+" href="/runs/(\d+)"', html)
    assert shown == [str(i) for i in reversed(ids[1:])]


def test_a_dashboard_poll_answers_204_until_something_changes(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK)
    url = poll_url(text_of(client, "/"), "board")
    assert url is not None

    unchanged = client.get(url, headers=HTMX)
    controller.trigger("quick")
    changed = client.get(url, headers=HTMX)

    assert unchanged.status_code == 204
    assert changed.status_code == 200
    fragment = changed.get_data(as_text=True)
    assert fragment.startswith('<div id="board"')
    assert "<html" not in fragment
    assert 'class="sq s-queued"' in fragment
    assert poll_url(fragment, "board") != url


def test_a_run_page_polls_while_the_run_goes_and_stops_when_it_ends(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK)
    run_id = controller.trigger("quick")
    url = poll_url(text_of(client, f"/runs/{run_id}"), "run-live")
    assert url is not None

    controller.run_to_end(run_id)
    fragment = client.get(url, headers=HTMX).get_data(as_text=True)

    assert poll_url(fragment, "run-live") is None
    assert 'id="run-state"><span class="badge s-succeeded">' in fragment
    assert (
        f'href="/runs/{run_id}/tasks/extract/attempts/1" class="latest">log' in fragment
    )
    assert poll_url(text_of(client, f"/runs/{run_id}"), "run-live") is None


def test_a_run_page_shows_exit_code_and_reason(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, FAILING)
    run_id = controller.trigger("failing")
    controller.run_to_end(run_id)

    html = text_of(client, f"/runs/{run_id}")

    boom = html[html.index('<tr id="task-boom">') : html.index('<tr id="task-after">')]
    assert '<span class="badge s-failed">failed</span>' in boom
    assert "<td>3</td>" in boom and "<td>Error</td>" in boom
    assert '<span class="badge s-upstream_failed">upstream failed</span>' in html


def test_a_dag_page_shows_runs_tasks_needs_and_error(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK, error="dags/quick.yaml:9:5: unknown task 'lod'")
    run_id = controller.trigger("quick")

    html = text_of(client, "/dags/quick")

    assert f'<tr id="run-{run_id}">' in html
    assert '<td class="name">load</td>' in html
    assert "<td><code>extract</code></td>" in html
    assert "unknown task &#39;lod&#39;" in html
    assert (
        "Runs use the last good version, from commit <code>3f2a9c1d5e7b</code>" in html
    )
    assert poll_url(html, "dag-runs") is not None


def test_the_log_page_shows_a_finished_log_without_polling(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK)
    run_id = controller.trigger("quick")
    controller.run_to_end(run_id)

    html = text_of(client, f"/runs/{run_id}/tasks/extract/attempts/1")

    assert '<pre id="log" class="log">extracted 3 rows\n</pre>' in html
    assert poll_url(html, "log-tail") is None
    assert "Completed" in html


def test_a_task_link_leads_to_its_latest_attempt(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK)
    run_id = controller.trigger("quick")
    controller.run_to_end(run_id)

    response = client.get(f"/runs/{run_id}/tasks/load")

    assert response.status_code == 302
    assert response.headers["Location"] == f"/runs/{run_id}/tasks/load/attempts/1"


def test_a_running_log_tails_new_lines_then_stops(
    db: sa.Engine,
    client: FlaskClient,
    controller: Controller,
    logs: LogStore,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    add_dag(db, gated_dag(gate))
    run_id = controller.trigger("gated")
    controller.engine.step()  # launches the task
    key = f"gated/{run_id}/wait/1.log"
    wait_until(lambda: log_or_nothing(logs, key) == b"waiting for the gate\n")

    # The page shows what is there and polls for what comes after it.
    page = text_of(client, f"/runs/{run_id}/tasks/wait/attempts/1")
    assert '<pre id="log" class="log" data-follow>waiting for the gate\n</pre>' in page
    tail = poll_url(page, "log-tail")
    assert tail is not None and tail.endswith("?offset=21")
    assert client.get(tail, headers=HTMX).status_code == 204

    # The task ends: the tail appends the rest and stops polling.
    gate.touch()
    assert controller.run_to_end(run_id) == "succeeded"
    fragment = client.get(tail, headers=HTMX).get_data(as_text=True)
    assert (
        '<div id="log-chunk" hx-swap-oob="beforeend:#log">gate opened\n</div>'
        in fragment
    )
    assert '<dl id="attempt-status" class="facts" hx-swap-oob="true">' in fragment
    assert poll_url(fragment, "log-tail") is None


def test_the_trigger_button_answers_a_message_and_an_event(
    db: sa.Engine, client: FlaskClient
) -> None:
    add_dag(db, QUICK)

    response = client.post("/dags/quick/trigger", headers=HTMX)

    assert response.status_code == 200
    assert response.headers["HX-Trigger"] == "kdag-run-created"
    run_id = re.search(r'href="/runs/(\d+)"', response.get_data(as_text=True))
    assert run_id is not None
    assert "created" in response.get_data(as_text=True)


def test_the_trigger_form_without_htmx_redirects_to_the_run(
    db: sa.Engine, client: FlaskClient
) -> None:
    add_dag(db, QUICK)

    response = client.post("/dags/quick/trigger")

    assert response.status_code == 303
    assert re.fullmatch(r"/runs/\d+", response.headers["Location"])


def test_triggering_an_unknown_dag_says_so_in_the_message(
    client: FlaskClient,
) -> None:
    response = client.post("/dags/nope/trigger", headers=HTMX)

    assert response.status_code == 404
    assert "Could not trigger: no DAG named &#39;nope&#39;" in response.get_data(
        as_text=True
    )


def test_a_trigger_from_another_site_is_refused(
    db: sa.Engine, client: FlaskClient
) -> None:
    add_dag(db, QUICK)

    response = client.post(
        "/dags/quick/trigger", headers={**HTMX, "Sec-Fetch-Site": "cross-site"}
    )

    assert response.status_code == 403
    assert text_of(client, "/dags/quick").count('<tr id="run-') == 0


def test_unknown_pages_answer_an_html_404(client: FlaskClient) -> None:
    assert "nothing at /nowhere" in text_of(client, "/nowhere", 404)
    assert "no DAG named &#39;nope&#39;" in text_of(client, "/dags/nope", 404)
    assert "no run with id 9" in text_of(client, "/runs/9", 404)
