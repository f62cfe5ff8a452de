"""The JSON API under /api/v1, through Flask's test client.

Real parts: SQLite and PostgreSQL (the `db` fixture), the engine and the local
launcher running each task as a subprocess, the file log store.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from kdag.logstore import LogStore
from kdag.web import create_app
from tests.web.webstate import (
    COMMIT,
    FAILING,
    QUICK,
    Controller,
    add_broken_dag,
    add_dag,
    add_sync,
)


def json_of(response: TestResponse, status: int) -> Any:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def test_health_answers_ok(client: FlaskClient) -> None:
    assert json_of(client.get("/api/v1/health"), 200) == {"status": "ok"}


def test_no_dags_is_an_empty_list(client: FlaskClient) -> None:
    assert json_of(client.get("/api/v1/dags"), 200) == {"dags": []}


def test_a_trigger_answers_201_with_the_run_id(
    db: sa.Engine, client: FlaskClient
) -> None:
    add_dag(db, QUICK)

    response = client.post("/api/v1/dags/quick/runs")

    body = json_of(response, 201)
    assert isinstance(body["id"], int)
    assert body["url"] == f"http://localhost/runs/{body['id']}"
    assert response.headers["Location"] == f"/api/v1/runs/{body['id']}"
    run = json_of(client.get(f"/api/v1/runs/{body['id']}"), 200)
    assert run["state"] == "queued"
    assert run["trigger"] == "manual"


def test_a_trigger_takes_an_empty_object_or_no_body(
    db: sa.Engine, client: FlaskClient
) -> None:
    add_dag(db, QUICK)
    assert client.post("/api/v1/dags/quick/runs", json={}).status_code == 201
    assert client.post("/api/v1/dags/quick/runs", json={"note": "x"}).status_code == 201
    empty_json = client.post(
        "/api/v1/dags/quick/runs", data="", content_type="application/json"
    )
    assert empty_json.status_code == 201


@pytest.mark.parametrize(
    ("data", "content_type", "says"),
    [
        ("{not json", "application/json", "not valid JSON"),
        ("[1, 2]", "application/json", "not an array"),
        ('"run it"', "application/json", "not a string"),
        ("null", "application/json", "not null"),
        ("dag=quick", "application/x-www-form-urlencoded", "Content-Type"),
    ],
)
def test_a_trigger_with_a_bad_body_answers_400(
    db: sa.Engine, client: FlaskClient, data: str, content_type: str, says: str
) -> None:
    add_dag(db, QUICK)

    response = client.post(
        "/api/v1/dags/quick/runs", data=data, content_type=content_type
    )

    assert says in json_of(response, 400)["error"]
    assert json_of(client.get("/api/v1/dags/quick"), 200)["runs"] == []


def test_a_finished_run_shows_every_task_and_attempt(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK)
    run_id = json_of(client.post("/api/v1/dags/quick/runs"), 201)["id"]

    assert controller.run_to_end(run_id) == "succeeded"

    run = json_of(client.get(f"/api/v1/runs/{run_id}"), 200)
    assert run["dag"] == "quick"
    assert run["state"] == "succeeded"
    assert run["commit"] == COMMIT
    assert run["started_at"].endswith("Z") and run["ended_at"].endswith("Z")
    assert [(t["name"], t["state"], t["needs"]) for t in run["tasks"]] == [
        ("extract", "succeeded", []),
        ("load", "succeeded", ["extract"]),
    ]
    attempt = run["tasks"][0]["attempts"][0]
    assert attempt["number"] == 1
    assert attempt["state"] == "succeeded"
    assert attempt["exit_code"] == 0
    assert attempt["reason"] == "Completed"
    assert attempt["log_uri"].startswith("file://")
    assert attempt["log_uri"].endswith(f"/quick/{run_id}/extract/1.log")
    assert attempt["external_id"]


def test_a_failed_run_shows_exit_code_reason_and_blocked_tasks(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, FAILING)
    run_id = controller.trigger("failing")

    assert controller.run_to_end(run_id) == "failed"

    run = json_of(client.get(f"/api/v1/runs/{run_id}"), 200)
    boom, after = run["tasks"]
    assert boom["state"] == "failed"
    assert boom["attempts"][0]["exit_code"] == 3
    assert boom["attempts"][0]["reason"] == "Error"
    assert after["state"] == "upstream_failed"
    assert after["attempts"] == []


def test_the_log_of_a_task_is_its_latest_attempts_output(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, QUICK)
    run_id = controller.trigger("quick")
    controller.run_to_end(run_id)

    latest = client.get(f"/api/v1/runs/{run_id}/tasks/extract/log")
    first = client.get(f"/api/v1/runs/{run_id}/tasks/extract/attempts/1/log")

    assert latest.status_code == 200
    assert latest.mimetype == "text/plain"
    assert latest.get_data(as_text=True) == "extracted 3 rows\n"
    assert latest.headers["X-Kdag-Attempt"] == "1"
    assert latest.headers["X-Kdag-Attempt-State"] == "succeeded"
    assert first.get_data() == latest.get_data()


def test_a_task_that_never_started_has_no_log(
    db: sa.Engine, client: FlaskClient, controller: Controller
) -> None:
    add_dag(db, FAILING)
    run_id = controller.trigger("failing")
    controller.run_to_end(run_id)

    response = client.get(f"/api/v1/runs/{run_id}/tasks/after/log")

    assert "has not started yet" in json_of(response, 404)["error"]


def test_a_removed_dag_cannot_be_triggered(db: sa.Engine, client: FlaskClient) -> None:
    add_dag(db, QUICK, is_active=False)
    response = client.post("/api/v1/dags/quick/runs")
    assert (
        json_of(response, 404)["error"] == "DAG 'quick' was removed from the repository"
    )
    assert 'disabled title="removed from the repository"' in client.get("/").text


def test_a_huge_body_answers_413(db: sa.Engine, client: FlaskClient) -> None:
    add_dag(db, QUICK)
    body = '{"note": "' + "x" * 100_000 + '"}'
    response = client.post(
        "/api/v1/dags/quick/runs", data=body, content_type="application/json"
    )
    assert json_of(response, 413)["error"]


@pytest.mark.parametrize(
    ("method", "url", "says"),
    [
        ("GET", "/api/v1/dags/nope", "no DAG named 'nope'"),
        ("POST", "/api/v1/dags/nope/runs", "no DAG named 'nope'"),
        ("GET", "/api/v1/runs/999", "no run with id 999"),
        ("GET", "/api/v1/runs/999/tasks/extract/log", "no run with id 999"),
        ("GET", "/api/v1/runs/{run}/tasks/nope/log", "has no task 'nope'"),
        ("GET", "/api/v1/runs/{run}/tasks/extract/attempts/7/log", "no attempt 7"),
        ("GET", "/api/v1/runs/abc", "nothing at /api/v1/runs/abc"),
        ("GET", f"/api/v1/runs/{2**64}", f"no run with id {2**64}"),
        ("GET", f"/api/v1/runs/{2**64}/tasks/extract/log", f"run {2**64}"),
        (
            "GET",
            f"/api/v1/runs/{{run}}/tasks/extract/attempts/{2**64}/log",
            "no attempt",
        ),
        ("GET", "/api/v1/nothing/here", "nothing at /api/v1/nothing/here"),
        ("GET", "/api", "nothing at /api"),
    ],
)
def test_unknown_things_answer_404_as_json(
    db: sa.Engine, client: FlaskClient, method: str, url: str, says: str
) -> None:
    add_dag(db, QUICK)
    run_id = json_of(client.post("/api/v1/dags/quick/runs"), 201)["id"]

    response = client.open(url.format(run=run_id), method=method)

    assert says in json_of(response, 404)["error"]


def test_a_wrong_method_answers_405_as_json(client: FlaskClient) -> None:
    response = client.delete("/api/v1/dags")

    assert "DELETE is not allowed" in json_of(response, 405)["error"]
    assert "GET" in response.headers["Allow"]


def test_an_unexpected_error_answers_500_without_a_traceback(
    db: sa.Engine, logs: LogStore
) -> None:
    def broken_trigger(dag: str) -> int:
        raise RuntimeError("secret internals")

    app = create_app(db=db, logs=logs, trigger=broken_trigger)

    response = app.test_client().post("/api/v1/dags/quick/runs")

    body = json_of(response, 500)
    assert body == {"error": "internal error; the server log has the details"}


def test_a_post_from_another_site_is_refused(
    db: sa.Engine, client: FlaskClient
) -> None:
    add_dag(db, QUICK)

    cross_site = client.post(
        "/api/v1/dags/quick/runs", headers={"Sec-Fetch-Site": "cross-site"}
    )
    other_origin = client.post(
        "/api/v1/dags/quick/runs", headers={"Origin": "https://evil.example"}
    )
    same_origin = client.post(
        "/api/v1/dags/quick/runs", headers={"Origin": "http://localhost"}
    )

    assert "cross-site" in json_of(cross_site, 403)["error"]
    assert json_of(other_origin, 403)
    assert same_origin.status_code == 201


def test_the_dag_list_has_latest_runs_newest_first(
    db: sa.Engine, logs: LogStore, controller: Controller
) -> None:
    add_dag(db, QUICK)
    add_dag(db, FAILING, error="dags/failing.yaml:2:1: unknown key 'scheudle'")
    add_broken_dag(db, "broken", "dags/broken.yaml:1:1: invalid YAML")
    ids = [controller.trigger("quick") for _ in range(3)]
    client = create_app(
        db=db, logs=logs, trigger=controller.trigger, runs_shown=2
    ).test_client()

    listed = json_of(client.get("/api/v1/dags"), 200)["dags"]

    broken, failing, quick = listed
    assert [d["name"] for d in listed] == ["broken", "failing", "quick"]
    assert [r["id"] for r in quick["runs"]] == [ids[2], ids[1]]
    assert set(quick["runs"][0]) == {
        "id",
        "state",
        "logical_date",
        "trigger",
        "started_at",
        "ended_at",
    }
    assert quick["schedule"] == "0 6 * * 1-5"
    assert quick["timezone"] == "America/New_York"
    # The next weekday 06:00 in New York: 10:00 or 11:00 UTC, in the next 4 days.
    next_run = datetime.fromisoformat(quick["next_run_at"])
    assert next_run.hour in (10, 11) and next_run.minute == 0
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=4)
    assert failing["next_run_at"] is None  # manual only
    assert quick["owner"] == "data-eng"
    assert quick["description"] == "Two quick tasks, one after the other"
    assert quick["commit"] == COMMIT
    assert quick["path"] == "dags/quick.yaml"
    assert quick["is_active"] is True
    assert quick["error"] is None
    assert failing["error"] == "dags/failing.yaml:2:1: unknown key 'scheudle'"
    assert failing["runs"] == []
    assert broken["commit"] is None
    assert broken["error"] == "dags/broken.yaml:1:1: invalid YAML"


def test_a_dag_shows_its_tasks_and_needs(db: sa.Engine, client: FlaskClient) -> None:
    add_dag(db, QUICK)

    dag = json_of(client.get("/api/v1/dags/quick"), 200)

    assert [(t["name"], t["needs"]) for t in dag["tasks"]] == [
        ("extract", []),
        ("load", ["extract"]),
    ]
    assert dag["runs"] == []


def test_the_sync_status_lists_file_errors(db: sa.Engine, client: FlaskClient) -> None:
    add_sync(db, file_errors={"dags/bad.yaml": "dags/bad.yaml:1:1: invalid YAML"})

    sync = json_of(client.get("/api/v1/sync"), 200)

    assert sync["commit"] == COMMIT
    assert sync["branch"] == "main"
    assert sync["errors"] == [
        {
            "path": "dags/bad.yaml",
            "commit": COMMIT,
            "message": "dags/bad.yaml:1:1: invalid YAML",
            "created_at": sync["synced_at"],
        }
    ]
