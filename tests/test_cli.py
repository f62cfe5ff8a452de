"""The `kdag` command through click's runner, and as a real process where the
exit code and output of the installed entry point matter."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdag.cli import main

GOOD = "name: hello\ndefaults: {image: busybox}\ntasks:\n  a: {command: ['true']}\n"
KDAG = str(Path(sys.executable).parent / "kdag")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_validate_passes_a_good_folder(runner: CliRunner, tmp_path: Path) -> None:
    write(tmp_path, "dags/hello.yaml", GOOD)
    result = runner.invoke(main, ["validate", str(tmp_path / "dags")])
    assert result.exit_code == 0, result.output
    assert "1 file(s) checked, 0 invalid" in result.output


def test_validate_prints_every_problem_of_every_file_and_exits_1(
    runner: CliRunner, tmp_path: Path
) -> None:
    write(tmp_path, "dags/good.yaml", GOOD)
    write(tmp_path, "dags/typo.yaml", GOOD.replace("tasks:", "scheudle: x\ntasks:"))
    write(tmp_path, "dags/not-yaml.yml", "tasks: [\n")
    write(tmp_path, "dags/.hidden/skip.yaml", "garbage: [")
    result = runner.invoke(main, ["validate", str(tmp_path / "dags")])

    assert result.exit_code == 1
    lines = [
        line
        for line in result.output.splitlines()
        if ".yaml:" in line or ".yml:" in line
    ]
    assert f"{tmp_path}/dags/typo.yaml:3:1: scheudle: unknown field" in lines[1]
    assert lines[0].startswith(f"{tmp_path}/dags/not-yaml.yml:")
    assert "3 file(s) checked, 2 invalid" in result.output
    assert "Traceback" not in result.output


def test_validate_reports_two_files_claiming_one_dag(
    runner: CliRunner, tmp_path: Path
) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD)
    result = runner.invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "b.yaml:1:1: name: DAG 'hello' is also defined in" in result.output


def test_validate_of_a_missing_path_is_a_one_line_error(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(main, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "no such file or folder" in result.output


def test_run_prefixes_task_output_and_exits_0_on_success(tmp_path: Path) -> None:
    dag = write(tmp_path, "d.yaml", GOOD.replace("['true']", "[echo, hi from a]"))
    done = subprocess.run(
        [KDAG, "run", str(dag)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "a | hi from a" in done.stdout
    assert "run succeeded" in done.stdout


def test_run_exits_1_when_a_task_fails(tmp_path: Path) -> None:
    dag = write(tmp_path, "d.yaml", GOOD.replace("['true']", "[sh, -c, 'exit 3']"))
    done = subprocess.run(
        [KDAG, "run", str(dag)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "exit code 3" in done.stdout


def test_run_with_task_runs_only_that_task(tmp_path: Path) -> None:
    text = GOOD + "  b: {command: [echo, only b], needs: [a]}\n"
    text += "  c: {command: [sh, -c, 'exit 1'], needs: [b]}\n"
    dag = write(tmp_path, "d.yaml", text)
    done = subprocess.run(
        [KDAG, "run", str(dag), "--task", "b"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "b | only b" in done.stdout
    assert " a " not in done.stdout.split("b | only b")[1].split("run ")[0]


def test_run_with_an_unknown_task_says_which_exist(tmp_path: Path) -> None:
    dag = write(tmp_path, "d.yaml", GOOD)
    done = subprocess.run(
        [KDAG, "run", str(dag), "--task", "zz"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "no task named 'zz'" in done.stderr and "tasks: a" in done.stderr


def test_next_shows_fire_times_in_words_and_local_time(
    runner: CliRunner, tmp_path: Path
) -> None:
    dag = write(
        tmp_path,
        "d.yaml",
        GOOD.replace(
            "tasks:", 'schedule: "0 6 * * 1-5"\ntimezone: America/New_York\ntasks:'
        ),
    )
    result = runner.invoke(main, ["next", str(dag), "-n", "3"])
    assert result.exit_code == 0, result.output
    assert "06:00 AM" in result.output or "6:00 AM" in result.output
    assert result.output.count(" 06:00 E") == 3  # EST or EDT


def test_version_answers(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and "kdag, version" in result.output


def test_a_bad_setting_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(main, ["status"], env={"KDAG_LAUNCHER": "docker"})
    assert result.exit_code == 2
    assert "launcher must be one of" in result.output


@pytest.mark.parametrize("command", [["status"], ["trigger", "hello"]])
def test_status_and_trigger_without_a_database_say_where_they_looked(
    runner: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    data_dir = tmp_path / "nothing-here"
    result = runner.invoke(main, [*command, "--data-dir", str(data_dir)])
    assert result.exit_code == 1
    assert f"no kdag database at {data_dir / 'kdag.db'}" in result.output
    assert not data_dir.exists()


def test_run_twice_with_one_database_keeps_both_runs(tmp_path: Path) -> None:
    dag = write(tmp_path, "d.yaml", GOOD)
    db_url = f"sqlite:///{tmp_path / 'kept.db'}"
    for run in ("run 1", "run 2"):
        done = subprocess.run(
            [KDAG, "run", str(dag), "--db-url", db_url],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (run, done.stderr)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--db-url", "garbage"], "database URL 'garbage' is not a URL"),
        (["--db-url", "mysql://db/kdag"], "must be sqlite:///path or postgresql://"),
        (["--logs-uri", "file://tmp/logs"], "write file:///absolute/path"),
        (["--logs-uri", "s3:///prefix"], "names no bucket"),
        (["--data-dir", __file__], "is a file, not a folder"),
    ],
)
def test_bad_settings_end_in_one_line_not_a_traceback(
    runner: CliRunner, flags: list[str], says: str
) -> None:
    result = runner.invoke(main, ["status", *flags])
    assert result.exit_code in (1, 2)
    assert says in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("KDAG_POLL_INTERVAL", "nan", "poll interval must be a positive number"),
        ("KDAG_SLACK_WEBHOOK_URL", "hooks.slack.com/x", "must be an http:// or https"),
    ],
)
def test_bad_variables_end_in_one_line(
    runner: CliRunner, tmp_path: Path, variable: str, value: str, says: str
) -> None:
    result = runner.invoke(
        main, ["controller", "--data-dir", str(tmp_path)], env={variable: value}
    )
    assert result.exit_code == 2
    assert says in result.output


def test_a_database_that_does_not_answer_is_one_line(runner: CliRunner) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://postgres@127.0.0.1:{port}/kdag"
    result = runner.invoke(main, ["trigger", "hello", "--db-url", url])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-2:]  # the error, and psycopg's hint
    assert last[0].startswith("Error: database unavailable:"), result.output
    assert "Traceback" not in result.output


def test_up_on_a_port_in_use_exits_instead_of_running_without_its_ui(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(
            [KDAG, "up", "--port", port, "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"cannot serve the web UI on 127.0.0.1:{port}" in done.stderr


def test_next_of_a_schedule_that_never_fires_is_an_error_not_a_traceback(
    runner: CliRunner, tmp_path: Path
) -> None:
    text = GOOD.replace("tasks:", 'schedule: "0 0 31 2 *"\ntasks:')
    dag = write(tmp_path, "d.yaml", text)
    result = runner.invoke(main, ["next", str(dag)])
    assert result.exit_code == 1
    assert f"{dag}:3:1: schedule: '0 0 31 2 *' never fires" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_of_a_symlink_loop_says_it_is_one(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "a.yaml").symlink_to(tmp_path / "b.yaml")
    (tmp_path / "b.yaml").symlink_to(tmp_path / "a.yaml")
    result = runner.invoke(main, ["validate", str(tmp_path / "a.yaml")])
    assert result.exit_code == 1
    assert f"{tmp_path / 'a.yaml'}: a symlink loop" in result.output


def test_validate_of_a_kdagignore_that_is_not_utf8_names_it(
    runner: CliRunner, tmp_path: Path
) -> None:
    write(tmp_path, "dags/hello.yaml", GOOD)
    (tmp_path / "dags/.kdagignore").write_bytes(b"drafts/\ncaf\xe9/\n")
    result = runner.invoke(main, ["validate", str(tmp_path / "dags")])
    assert result.exit_code == 1
    assert f"{tmp_path}/dags/.kdagignore:2:1: not UTF-8 text" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("count", ["0", "-3"])
def test_next_wants_at_least_one_fire_time(
    runner: CliRunner, tmp_path: Path, count: str
) -> None:
    text = GOOD.replace("tasks:", "schedule: '@daily'\ntasks:")
    dag = write(tmp_path, "d.yaml", text)
    result = runner.invoke(main, ["next", str(dag), "-n", count])
    assert result.exit_code == 2
    assert "x>=1" in result.output


def test_status_names_broken_files_that_are_not_dags_yet(
    runner: CliRunner, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from kdag import db as kdb
    from kdag.db.schema import sync_errors

    url = f"sqlite:///{tmp_path / 'kdag.db'}"
    engine = kdb.connect(url)
    kdb.migrate(engine)
    with engine.begin() as conn:
        conn.execute(
            sync_errors.insert().values(
                path="dags/cyclic.yaml",
                commit="c0ffee",
                message="dags/cyclic.yaml:5:3: dependency cycle a -> b -> a",
                created_at=datetime.now(UTC),
            )
        )
    result = runner.invoke(main, ["status", "--db-url", url])
    assert result.exit_code == 0, result.output
    assert "broken file: dags/cyclic.yaml:5:3: dependency cycle a -> b -> a" in (
        result.output
    )
