"""`kdag up` killed or stopped while a task runs, then started again.

Real parts: the `kdag` command in processes of its own, a git repository made
in a temp folder, SQLite, the local launcher and its task processes, signals.
Nothing is emulated.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_up import Up, start_up, wait_for
from tests.fakes.processes import is_running
from tests.gitsync.gitrepos import Origin

# The first attempt waits for a minute; a retry ends at once.
DAG = """\
name: sleepy
defaults: {{image: busybox}}
tasks:
  nap:
    command:
      - sh
      - -c
      - 'echo $$$$ > {pid_file}; [ "$KDAG_ATTEMPT" != 1 ] || exec sleep 60'
"""


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[], Up]]:
    """Start `kdag up` on a repository with DAG, again and again, one data dir."""
    origin = Origin(tmp_path / "repo")
    origin.write("dags/sleepy.yaml", DAG.format(pid_file=tmp_path / "pid"))
    origin.commit("add sleepy")
    started: list[Up] = []

    def start_one() -> Up:
        up = start_up(origin.folder, "dags", tmp_path / "data")
        started.append(up)
        wait_for("the DAG", lambda: up.get("/api/v1/dags")["dags"], 60)
        return up

    yield start_one
    for up in started:
        up.close()


def first_attempt_running(up: Up, tmp_path: Path) -> tuple[int, int]:
    """Trigger sleepy; return the run id and its first attempt's pid."""
    answer = up.kdag("trigger", "sleepy")
    assert answer.returncode == 0, answer.stderr
    run_id = int(answer.stdout.split()[1])
    pid_file = tmp_path / "pid"
    wait_for(
        "the first attempt", lambda: pid_file.exists() and pid_file.read_text(), 60
    )
    return run_id, int(pid_file.read_text())


def ended_run(up: Up, run_id: int) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        run: dict[str, Any] = up.get(f"/api/v1/runs/{run_id}")
        return None if run["state"] in ("queued", "running") else run

    found: dict[str, Any] = wait_for(f"run {run_id} to end", ended, 60)
    return found


@pytest.mark.parametrize(
    ("how", "reason"),
    [(signal.SIGKILL, "ControllerLost"), (signal.SIGTERM, "ControllerStopped")],
)
def test_a_restart_retries_the_task_it_cut_short_once_without_a_duplicate(
    start: Callable[[], Up], tmp_path: Path, how: signal.Signals, reason: str
) -> None:
    first = start()
    run_id, pid = first_attempt_running(first, tmp_path)

    first.process.send_signal(how)
    first.process.wait(timeout=60)
    second = start()

    # The attempt cut short ends with why, costs no retry (the task has none),
    # and what it left running is gone before the retry starts.
    run = ended_run(second, run_id)
    assert run["state"] == "succeeded", json.dumps(run, indent=1)
    (nap,) = run["tasks"]
    assert [(a["number"], a["reason"]) for a in nap["attempts"]] == [
        (1, reason),
        (2, "Completed"),
    ]
    assert not is_running(pid)
    assert os.path.exists(tmp_path / "pid")
