"""The `kdag` command. Heavy libraries are imported inside the commands that
use them, so `kdag --version` and `kdag validate` answer at once."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from kdag import __version__
from kdag.errors import ConfigError, KdagError, SpecError, SpecErrors

F = TypeVar("F", bound=Callable[..., Any])

SHARED_FLAGS = [
    click.option("--db-url", help="SQLAlchemy URL [env KDAG_DB_URL; default SQLite]"),
    click.option("--logs-uri", help="file://DIR or s3://bucket/prefix [KDAG_LOGS_URI]"),
    click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        help="where the embedded defaults live [KDAG_DATA_DIR; .kdag]",
    ),
    click.option("--log-format", type=click.Choice(["text", "json"])),
    click.option("-v", "--verbose", is_flag=True, help="log per-step detail (DEBUG)"),
]
CONTROLLER_FLAGS = [
    click.option(
        "--repo", help="git URL or local path of the DAG repository [KDAG_REPO]"
    ),
    click.option("--branch", help="branch to follow [KDAG_BRANCH; main]"),
    click.option(
        "--path", help="folder of DAG files inside the repository [KDAG_PATH]"
    ),
    click.option(
        "--poll-interval",
        "poll_interval_s",
        type=float,
        help="seconds between git fetches [KDAG_POLL_INTERVAL; 30]",
    ),
    click.option(
        "--launcher",
        type=click.Choice(["local", "kubernetes"]),
        help="how tasks run [KDAG_LAUNCHER; local]",
    ),
    click.option(
        "--slack-webhook-url", help="Slack incoming webhook [KDAG_SLACK_WEBHOOK_URL]"
    ),
    click.option("--base-url", help="the UI's address, for links [KDAG_BASE_URL]"),
]
WEB_FLAGS = [
    click.option("--host", help="address to listen on [KDAG_HOST; 127.0.0.1]"),
    click.option("--port", type=int, help="port to listen on [KDAG_PORT; 8080]"),
]


def with_flags(*groups: list[Any]) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        for group in reversed(groups):
            for flag in reversed(group):
                command = flag(command)
        return command

    return decorate


class KdagGroup(click.Group):
    """Ends any kdag error, or a database that does not answer, in one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KdagError as error:
            raise click.ClickException(str(error)) from error
        except Exception as error:
            if not _is_database_down(error):
                raise
            raise click.ClickException(f"database unavailable: {error}") from error


def _is_database_down(error: Exception) -> bool:
    # NB: sqlalchemy is imported only once an error is seen, so --version stays fast.
    from sqlalchemy import exc

    return isinstance(error, exc.OperationalError | exc.InterfaceError)


@click.group(cls=KdagGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdag")
def main() -> None:
    """kdag: run containers on a schedule, in order, and see what happened."""


# -- validate -----------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check DAG files (or folders of them); print every problem as file:line:col."""
    from kdag.specs.parsing import parse_dag

    files = list(_dag_files(paths))
    problems: list[SpecError] = []
    names: dict[str, str] = {}
    for file in files:
        try:
            spec = parse_dag(file.read_text(encoding="utf-8"), str(file))
        except SpecErrors as errors:
            problems += errors.errors
            continue
        except (OSError, UnicodeDecodeError) as error:
            problems.append(SpecError(f"cannot read the file: {error}", path=str(file)))
            continue
        if spec.name in names:
            problems.append(
                SpecError(
                    f"name: DAG {spec.name!r} is also defined in {names[spec.name]}",
                    path=str(file),
                    field="name",
                )
            )
        names.setdefault(spec.name, str(file))
    for problem in problems:
        click.echo(str(problem))
    bad = len({p.path for p in problems})
    if not files:
        raise click.ClickException("no DAG files (*.yaml, *.yml) found")
    click.echo(f"{len(files)} file(s) checked, {bad} invalid", err=True)
    if problems:
        sys.exit(1)


def _dag_files(paths: tuple[Path, ...]) -> Iterator[Path]:
    import errno

    from kdag.specs.discovery import IGNORE_FILE, ignore_patterns, is_dag_file

    for path in paths:
        if path.is_dir():
            ignore = path / IGNORE_FILE
            try:
                text = ignore.read_bytes().decode() if ignore.exists() else ""
            except UnicodeDecodeError as error:
                line = error.object[: error.start].count(b"\n") + 1
                message = f"{ignore}:{line}:1: not UTF-8 text ({error.reason})"
                raise click.ClickException(message) from error
            except OSError as error:
                message = f"{ignore}: cannot read it: {error}"
                raise click.ClickException(message) from error
            patterns = ignore_patterns(text)
            for found in sorted(path.rglob("*")):
                relative = found.relative_to(path).as_posix()
                if found.is_file() and is_dag_file(relative, patterns):
                    yield found
        else:
            try:
                path.stat()  # NB: not exists(), which is False for a symlink loop too
            except OSError as error:
                is_loop = error.errno == errno.ELOOP
                why = "a symlink loop" if is_loop else "no such file or folder"
                raise click.ClickException(f"{path}: {why}") from error
            yield path


# -- next ---------------------------------------------------------------------


@main.command(name="next")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="how many fire times",
)
def next_(file: Path, count: int) -> None:
    """Show a DAG's next fire times, in words and in its own time zone."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from kdag.specs.cron import describe, next_fire_times

    spec = _load_or_exit(file)
    if not spec.schedule:
        click.echo(f"{spec.name}: no schedule (runs only when triggered)")
        return
    zone = ZoneInfo(spec.timezone)
    click.echo(
        f"{spec.name}: {spec.schedule} ({describe(spec.schedule)}), in {spec.timezone}"
    )
    ticks = next_fire_times(
        spec.schedule, spec.timezone, after=datetime.now(UTC), count=count
    )
    for tick in ticks:
        local = tick.astimezone(zone)
        click.echo(f"  {local:%a %Y-%m-%d %H:%M %Z}   ({tick:%Y-%m-%d %H:%M} UTC)")


def _load_or_exit(file: Path) -> Any:
    from kdag.specs.parsing import parse_dag

    try:
        return parse_dag(file.read_text(encoding="utf-8"), str(file))
    except SpecErrors as errors:
        for problem in errors.errors:
            click.echo(str(problem), err=True)
        sys.exit(1)
    except (OSError, UnicodeDecodeError) as error:
        raise click.ClickException(f"{file}: cannot read the file: {error}") from error


# -- run ----------------------------------------------------------------------


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--task", "only", multiple=True, help="run only this task (repeatable)")
@click.option(
    "--db-url",
    default="sqlite://",
    help="keep the run's records in this database [default: in memory]",
)
@click.option("-v", "--verbose", is_flag=True, help="log kdag's own steps too")
def run(file: Path, only: tuple[str, ...], db_url: str, verbose: bool) -> None:
    """Run a DAG here and now with local processes; exit 0 if every task succeeded."""
    from kdag.localrun import run_file

    _setup_logging("text", logging.INFO if verbose else logging.WARNING)
    spec = _load_or_exit(file)
    unknown = [t for t in only if t not in spec.tasks]
    if unknown:
        raise click.UsageError(
            f"no task named {', '.join(map(repr, unknown))} in "
            f"{spec.name} (tasks: {', '.join(spec.tasks)})"
        )
    is_success = run_file(file, only=only, echo=click.echo, db_url=db_url)
    sys.exit(0 if is_success else 1)


# -- controller, web, up ------------------------------------------------------


@main.command()
@with_flags(SHARED_FLAGS, CONTROLLER_FLAGS)
def controller(**flags: Any) -> None:
    """Sync the DAG repository, schedule runs and launch their tasks."""
    settings = _settings(flags)
    from kdag.controller import build_controller

    ctl = build_controller(settings)
    _run_until_signal(lambda stop: ctl.run(stop))


@main.command()
@with_flags(SHARED_FLAGS, WEB_FLAGS, [CONTROLLER_FLAGS[-1]])
def web(**flags: Any) -> None:
    """Serve the web UI and the JSON API."""
    settings = _settings(flags)
    from kdag.serving import serve_web

    _run_until_signal(lambda stop: serve_web(settings, stop=stop))


@main.command()
@with_flags(SHARED_FLAGS, CONTROLLER_FLAGS, WEB_FLAGS)
def up(**flags: Any) -> None:
    """Run the controller and the web UI together (the embedded defaults)."""
    settings = _settings(flags)
    from kdag.serving import serve_all

    _run_until_signal(lambda stop: serve_all(settings, stop=stop))


# -- trigger, status ----------------------------------------------------------


@main.command()
@click.argument("dag")
@with_flags(SHARED_FLAGS)
def trigger(dag: str, **flags: Any) -> None:
    """Create a manual run of DAG now; the controller starts it."""
    settings = _settings(flags, level=logging.WARNING)
    from kdag.engine import trigger_run, utc_now
    from kdag.serving import open_db

    db = open_db(_existing(settings))
    with db.begin() as conn:  # NB: KdagGroup turns NotFound into one line
        run_id = trigger_run(conn, dag, now=utc_now())
    click.echo(
        f"run {run_id} of {dag} queued: {settings.effective_base_url}/runs/{run_id}"
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the snapshot as JSON")
@click.option("-n", "runs_shown", default=5, show_default=True, help="runs per DAG")
@with_flags(SHARED_FLAGS)
def status(as_json: bool, runs_shown: int, **flags: Any) -> None:
    """Show every DAG, its latest runs and the states of their tasks."""
    settings = _settings(flags, level=logging.WARNING)
    from kdag.reading import get_run, list_dags, sync_status
    from kdag.serving import open_db

    db = open_db(_existing(settings))
    with db.connect() as conn:
        snapshot: dict[str, Any] = {
            "sync": sync_status(conn),
            "dags": list_dags(conn, runs_shown),
        }
        for dag in snapshot["dags"]:
            dag["runs"] = [get_run(conn, r["id"]) for r in dag["runs"]]
    if as_json:
        click.echo(json.dumps(snapshot, indent=2))
        return
    _print_status(snapshot)


def _print_status(snapshot: dict[str, Any]) -> None:
    sync = snapshot["sync"] or {}
    if sync.get("commit"):
        click.echo(f"synced commit {sync['commit'][:12]} at {sync.get('synced_at')}")
    if sync.get("error"):
        click.echo(f"sync failed: {sync['error']}")
    for problem in sync.get("errors") or []:
        click.echo(f"broken file: {problem['message']}")
    for dag in snapshot["dags"]:
        flag = "" if dag.get("is_active", True) else " (removed)"
        when = f"{dag['schedule']} ({dag['timezone']})" if dag.get("schedule") else ""
        click.echo(f"{dag['name']}{flag}  schedule: {when or 'manual only'}")
        if dag.get("error"):
            click.echo(f"  error: {dag['error']}")
        for run in dag["runs"]:
            states = " ".join(f"{t['name']}={t['state']}" for t in run["tasks"])
            click.echo(
                f"  run {run['id']:>5} {run['state']:<10} "
                f"{run['logical_date']}  {states}"
            )
    if not snapshot["dags"]:
        click.echo("no DAGs yet")


# -- helpers ------------------------------------------------------------------


def _settings(flags: dict[str, Any], *, level: int = logging.INFO) -> Any:
    """Build the settings from flags and variables; set up logging at `level`."""
    from kdag.settings import Settings

    verbose = flags.pop("verbose", False)
    try:
        settings = Settings.load(**flags)
    except ConfigError as error:
        raise click.UsageError(str(error)) from error
    _setup_logging(settings.log_format, logging.DEBUG if verbose else level)
    return settings


def _existing(settings: Any) -> Any:
    """Return `settings` if their database exists; a default SQLite file may not."""
    path = settings.data_dir / "kdag.db"
    if settings.db_url or path.exists():
        return settings
    raise click.ClickException(
        f"no kdag database at {path.resolve()}: run this where `kdag up` runs, "
        "or pass --data-dir or --db-url"
    )


def _run_until_signal(body: Any) -> None:
    """Run `body(stop)` until SIGTERM or Ctrl-C sets `stop`."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    body(stop)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _setup_logging(log_format: str, level: int) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("werkzeug", "urllib3", "git", "botocore", "kubernetes", "alembic"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


if __name__ == "__main__":
    main()
