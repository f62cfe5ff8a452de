"""The whole slice at once, through real parts: a DAG in a real git repository
made in a temp folder, the controller with each launcher, logs in a file
store, the JSON API through Flask's test client, SQLite and PostgreSQL, and
Slack alerts posted by slack-sdk to a local HTTP receiver.

Emulated: Slack's server (one that answers, and one that never does), and, for
the kubernetes launcher, the Kubernetes API (`tests/fakes/kube_emulator.py`,
reached over HTTP by the real client, whose kubelet runs each pod's command as
a local process)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kdag.controller import Controller, build_controller
from kdag.db.schema import runs
from kdag.engine import trigger_run
from kdag.settings import Settings
from kdag.web import create_app
from tests.fakes.kube_emulator import KubeEmulator
from tests.fakes.slack_receiver import SlackReceiver
from tests.gitsync.gitrepos import Origin

DAG = """\
name: e2e
description: A DAG with a task that keeps failing
defaults:
  image: busybox
  retries: 2
  retryDelay: 0s
tasks:
  extract:
    command: [sh, -c, "echo extracting for run $(KDAG_RUN_ID) attempt $KDAG_ATTEMPT"]
  flaky:
    command: [sh, -c, "echo boom on attempt $KDAG_ATTEMPT >&2; exit 3"]
    needs: [extract]
  load:
    command: ["true"]
    needs: [flaky]
  side:
    command: [sh, -c, "echo side work"]
    retries: 0
"""


def make_repo(tmp_path: Path, name: str, source: str) -> Path:
    origin = Origin(tmp_path / "dags-repo")
    origin.write(f"dags/{name}.yaml", source)
    origin.commit(f"add the {name} DAG")
    return origin.folder


@pytest.fixture
def dag_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, "e2e", DAG)


@pytest.fixture(params=["local", "kubernetes"])
def launcher(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The launcher's name; for kubernetes, an emulated API that KUBECONFIG names."""
    if request.param == "local":
        yield "local"
        return
    with KubeEmulator() as kube:
        kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield "kubernetes"
        assert kube.pods == {}, "every pod is deleted once its attempt ends"


@pytest.fixture
def running(
    db_url: str, dag_repo: Path, tmp_path: Path, launcher: str
) -> Iterator[tuple[Controller, SlackReceiver]]:
    with SlackReceiver() as slack:
        settings = Settings(
            launcher=launcher,
            data_dir=tmp_path / "kdag",
            db_url=db_url,
            repo=str(dag_repo),
            path="dags",
            slack_webhook_url=slack.url,
            base_url="http://kdag.test",
        )
        controller = build_controller(settings)
        controller.step()  # the first step syncs git, before the loop starts
        stop = threading.Event()
        loop = threading.Thread(target=controller.run, args=(stop,), daemon=True)
        loop.start()
        try:
            yield controller, slack
        finally:
            stop.set()
            controller.wake.set()
            loop.join(timeout=30)
            controller.db.dispose()


def test_a_failing_task_retries_blocks_its_downstream_and_alerts_slack(
    running: tuple[Controller, SlackReceiver],
) -> None:
    controller, slack = running
    app = create_app(
        db=controller.db,
        logs=controller.logs,
        trigger=_trigger(controller),
        base_url="http://kdag.test",
    )
    client = app.test_client()

    # The DAG arrived through git sync; trigger it through the API.
    answer = client.post("/api/v1/dags/e2e/runs")
    assert answer.status_code == 201
    run_id = answer.get_json()["id"]

    # Slack hears about the task that failed for good, then about the run.
    first, second = slack.next_message(60), slack.next_message(60)
    texts = first["text"] + second["text"]
    assert "flaky" in first["text"] and "attempt 3" in first["text"]
    assert "exit code 3" in first["text"]
    assert f"http://kdag.test/runs/{run_id}" in texts
    assert f"run {run_id} failed" in second["text"]

    # The API's view of the run.
    run = client.get(f"/api/v1/runs/{run_id}").get_json()
    assert run["state"] == "failed"
    states = {t["name"]: t["state"] for t in run["tasks"]}
    assert states == {
        "extract": "succeeded",
        "flaky": "failed",
        "load": "upstream_failed",
        "side": "succeeded",
    }
    flaky = _task(run, "flaky")
    assert [a["exit_code"] for a in flaky["attempts"]] == [3, 3, 3]
    assert {a["reason"] for a in flaky["attempts"]} == {"Error"}
    assert all(a["log_uri"].startswith("file://") for a in flaky["attempts"])
    assert _task(run, "load")["attempts"] == []

    # Every attempt's log is in the store, readable through the API.
    for number in (1, 2, 3):
        log = client.get(f"/api/v1/runs/{run_id}/tasks/flaky/attempts/{number}/log")
        assert log.status_code == 200
        assert f"boom on attempt {number}" in log.get_data(as_text=True)
    latest = client.get(f"/api/v1/runs/{run_id}/tasks/extract/log").get_data(
        as_text=True
    )
    assert f"extracting for run {run_id} attempt 1" in latest
    uri = _task(run, "extract")["attempts"][0]["log_uri"]
    assert Path(uri.removeprefix("file://")).read_text() == latest


CHAIN = """\
name: chain
defaults: {image: busybox}
tasks:
  boom: {command: [sh, -c, "exit 1"]}
  bang: {command: [sh, -c, "exit 2"]}
  first: {command: ["true"]}
  second: {command: ["true"], needs: [first]}
  third: {command: ["true"], needs: [second]}
"""


class SilentWebhook:
    """A TCP server that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/services/T000/B000/XXX"
        self.accepted = threading.Event()
        self.first_accepted_at = datetime.min.replace(tzinfo=UTC)
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return  # closed
            self.connections.append(connection)
            if not self.accepted.is_set():
                self.first_accepted_at = datetime.now(UTC)
                self.accepted.set()

    def close(self) -> None:
        """Hang up on every client, so none waits for its timeout."""
        self.server.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self.server.close()
        self.thread.join(timeout=5)
        for connection in self.connections:
            connection.close()


def test_a_webhook_that_never_answers_does_not_slow_the_runs(
    db_url: str, tmp_path: Path
) -> None:
    hook = SilentWebhook()
    settings = Settings(
        data_dir=tmp_path / "kdag",
        db_url=db_url,
        repo=str(make_repo(tmp_path, "chain", CHAIN)),
        path="dags",
        slack_webhook_url=hook.url,
        base_url="http://kdag.test",
    )
    controller = build_controller(settings)
    controller.step()  # syncs git
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop,), daemon=True)
    loop.start()
    try:
        run_id = _trigger(controller)("chain")
        # boom and bang fail at once; the alert sender then waits on Slack,
        # up to its 10 s timeout per alert, while the chain goes on.
        assert hook.accepted.wait(30)
        ended_at = _wait_for_end(controller, run_id, timeout_s=30)
        assert ended_at - hook.first_accepted_at < timedelta(seconds=5)
    finally:
        hook.close()
        stop.set()
        controller.wake.set()
        loop.join(timeout=30)
        controller.db.dispose()
    assert not loop.is_alive()
    assert "kdag-alert-sender" not in {t.name for t in threading.enumerate()}


def _wait_for_end(controller: Controller, run_id: int, *, timeout_s: float) -> Any:
    """Return the run's end time, looking every 50 ms until `timeout_s`."""
    give_up = threading.Event()
    timer = threading.Timer(timeout_s, give_up.set)
    timer.start()
    try:
        while not give_up.wait(0.05):
            with controller.db.connect() as conn:
                ended_at = conn.execute(
                    sa.select(runs.c.ended_at).where(runs.c.id == run_id)
                ).scalar_one()
            if ended_at is not None:
                return ended_at
    finally:
        timer.cancel()
    raise AssertionError(f"run {run_id} did not end in {timeout_s}s")


def _trigger(controller: Controller) -> Any:
    def trigger(dag: str) -> int:
        with controller.db.begin() as conn:
            run_id = trigger_run(conn, dag, now=controller.engine.clock())
        controller.wake.set()
        return run_id

    return trigger


def _task(run: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in run["tasks"] if t["name"] == name)
