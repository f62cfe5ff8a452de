"""Turn the text of a DAG file into a `DagSpec`, or every problem found in it.

Three passes, each reporting file:line:col of the offending key:

1. YAML 1.2 into data JSON can hold (see `loading`): syntax errors, duplicate
   or non-string keys, and files too big once aliases are expanded stop here;
   values of other types (`!!binary`, ...) are reported and the passes go on.
2. The JSON Schema in `schemas/dag.schema.json`: types, patterns, unknown keys
   (a typo such as `scheudle:` must never pass silently).
3. Meaning: every `needs` names a task, no cycle, the cron expression and the
   time zone are valid, durations are within `DURATION_LIMITS`.

No I/O here beyond reading the schema once: the caller passes the text.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from importlib import resources
from typing import Any

from kdag.errors import SpecError, SpecErrors
from kdag.specs.loading import (
    json_data,
    key_position,
    kind_of,
    load_yaml,
    node_at,
    position,
)
from kdag.specs.model import DagSpec, EnvValue, SecretRef, TaskSpec

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
TASK_FIELDS = ("image", "namespace", "serviceAccount", "resources", "retries")
# What a value that fails a pattern must be, by the name of its field (or of
# the mapping whose keys it checks).
PATTERN_MEANINGS = {
    "name": "a DNS-1123 label (lower-case letters, digits and '-', starting and "
    "ending with a letter or digit)",
    "tasks": "a task name (letters, digits, '-', '_' and '.', starting and ending "
    "with a letter or digit, at most 63 characters)",
    "owner": "a label value (letters, digits, '-', '_' and '.', starting and "
    "ending with a letter or digit, at most 63 characters)",
    "env": "an environment variable name (letters, digits, '_', '-' and '.', "
    "not starting with a digit)",
}
TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}
# NB: the controller adds these to datetimes; unbounded, they overflow it.
DURATION_LIMITS = {"timeout": timedelta(days=30), "retryDelay": timedelta(days=1)}


@functools.cache
def dag_schema() -> dict[str, Any]:
    """Return the JSON Schema of a DAG file."""
    text = resources.files("kdag.specs").joinpath("dag.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def parse_dag(text: str, path: str) -> DagSpec:
    """Parse and check one DAG file; raise SpecErrors listing every problem."""
    document = load_yaml(text, path)
    data, errors = json_data(document, path)
    explained = {e.field for e in errors}  # one error a value: the first says why
    errors += [
        e for e in _schema_errors(data, document, path) if e.field not in explained
    ]
    errors += _meaning_errors(_well_formed_part(document), path)
    if errors:
        # NB: two rules of the schema may say the same thing (tasks.a: null).
        unique = {str(e): e for e in errors}.values()
        raise SpecErrors(sorted(unique, key=lambda e: (e.line, e.col)))
    return _build(document, path)


def parse_duration(value: str | int) -> timedelta:
    """Read 90, '90s', '5m', '1h30m' or '2d' as a timedelta."""
    if isinstance(value, int):
        return timedelta(seconds=value)
    match = _DURATION.match(value)
    if not value or not match:
        raise ValueError(f"not a duration: {value!r}")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _schema_errors(data: Any, document: Any, path: str) -> Iterator[SpecError]:
    """Check `data` against the schema; place each error in `document`."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(dag_schema())
    found = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path)))
    for error in found:
        yield from _explain(error, document, path)


def _explain(error: Any, document: Any, path: str) -> Iterator[SpecError]:
    """Turn one jsonschema error into messages at the right line and column."""
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        yield from _unknown_fields(error, document, path)
        return
    fitting = _fitting_alternative(error)
    if fitting:
        for inner in fitting:
            yield from _explain(inner, document, path)
        return
    where = list(error.absolute_path)
    if "propertyNames" in error.schema_path:  # the key is wrong, not its value
        line, col = key_position(node_at(document, where), error.instance)
    else:
        line, col = position(document, where)
    field = ".".join(map(str, where))
    message = f"{field or 'the file'}: {_message(error, where)}"
    yield SpecError(message, path=path, line=line, col=col, field=field)


def _unknown_fields(error: Any, document: Any, path: str) -> Iterator[SpecError]:
    where = list(error.absolute_path)
    node = node_at(document, where)
    allowed = _allowed_keys(error.schema)
    for key in node if isinstance(node, Mapping) else ():
        if key not in allowed and _is_unexpected(key, error):
            line, col = key_position(node, key)
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else ""
            name = ".".join([*map(str, where), str(key)])
            message = f"{name}: unknown field{more}"
            yield SpecError(message, path=path, line=line, col=col, field=name)


def _fitting_alternative(error: Any) -> list[Any]:
    """Return the errors of the one alternative of a oneOf that fits the value's
    type (the mapping of a secret reference, say), or [] if there is none."""
    if error.validator != "oneOf" or _is_duration(error):
        return []
    alternatives: dict[int, list[Any]] = {}
    for inner in error.context:
        alternatives.setdefault(inner.relative_schema_path[0], []).append(inner)
    fitting = [
        inners
        for inners in alternatives.values()
        if not any(e.validator == "type" and not e.relative_path for e in inners)
    ]
    return fitting[0] if len(fitting) == 1 else []


def _message(error: Any, where: Sequence[Any]) -> str:
    """Say what is wrong with a value, in the words of its field."""
    shown = _shown(error.instance)
    if error.validator == "required":
        return str(error.message).replace("is a required property", "is required")
    if _is_duration(error):
        return (
            f"{shown} is not a duration "
            "(write 30s, 5m, 1h30m or 2d, or a whole number of seconds)"
        )
    if error.validator == "oneOf":
        types = [s["type"] for s in error.validator_value if "type" in s]
        return f"must be {_type_words(types)}, not {shown}"
    if error.validator == "type":
        return f"must be {_type_words(error.validator_value)}, not {shown}"
    if error.validator in ("minLength", "minItems", "minProperties"):
        return "must not be empty"
    if error.validator == "maxLength":
        return f"{shown} is longer than {error.validator_value} characters"
    if error.validator == "pattern":
        meaning = PATTERN_MEANINGS.get(str(where[-1]) if where else "")
        return f"{shown} is not {meaning}" if meaning else str(error.message)
    return str(error.message)


def _is_duration(error: Any) -> bool:
    return bool(error.schema == dag_schema()["$defs"]["duration"])


def _type_words(types: str | list[str]) -> str:
    names = [types] if isinstance(types, str) else types
    return " or ".join(TYPE_WORDS.get(name, name) for name in names)


def _shown(value: Any) -> str:
    """Show a JSON value as its YAML writer would know it."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or isinstance(value, dict | list):
        return kind_of(value)
    return repr(value)


def _is_unexpected(key: Any, error: Any) -> bool:
    return repr(str(key)) in error.message or f"'{key}'" in error.message


def _allowed_keys(schema: Mapping[str, Any]) -> list[str]:
    keys = list(schema.get("properties", {}))
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        keys += list(dag_schema()["$defs"][ref.split("/")[-1]].get("properties", {}))
    return keys


def _well_formed_part(document: Any) -> Any:
    """Return a copy holding only what meaning checks can read, so that they
    can run (and report) even when the schema found problems elsewhere."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    part = CommentedMap()
    part.lc.data = getattr(document.lc, "data", {})
    tasks = document.get("tasks")
    part["tasks"] = CommentedMap()
    if isinstance(tasks, CommentedMap):
        part["tasks"] = tasks
        for name, task in list(tasks.items()):
            is_ok = isinstance(task, Mapping) and isinstance(
                task.get("needs", CommentedSeq()), CommentedSeq
            )
            if not is_ok or not all(isinstance(n, str) for n in task.get("needs", ())):
                part["tasks"] = CommentedMap(
                    (n, t) for n, t in tasks.items() if n != name
                )
                part["tasks"].lc.data = tasks.lc.data
                tasks = part["tasks"]
    for key in ("timezone", "schedule", "defaults"):
        value = document.get(key)
        if (key == "defaults" and isinstance(value, Mapping)) or isinstance(value, str):
            part[key] = value
    return part


def _meaning_errors(document: Any, path: str) -> list[SpecError]:
    return list(_find_meaning_errors(document, path))


def _find_meaning_errors(document: Any, path: str) -> Iterator[SpecError]:
    tasks = document["tasks"]
    for name, task in tasks.items():
        for i, need in enumerate(task.get("needs") or ()):
            if need not in tasks:
                line, col = task["needs"].lc.item(i)
                hint = difflib.get_close_matches(str(need), list(tasks), n=1)
                more = f" (did you mean {hint[0]!r}?)" if hint else ""
                yield SpecError(
                    f"tasks.{name}.needs: no task named {need!r}{more}",
                    path=path,
                    line=line + 1,
                    col=col + 1,
                    field=f"tasks.{name}.needs",
                )
        if not task.get("image") and not (document.get("defaults") or {}).get("image"):
            line, col = key_position(tasks, name)
            yield SpecError(
                f"tasks.{name}: no image (set tasks.{name}.image or defaults.image)",
                path=path,
                line=line,
                col=col,
                field=f"tasks.{name}.image",
            )
    yield from _duration_errors(document, path)
    cycle = _find_cycle({n: list(t.get("needs") or ()) for n, t in tasks.items()})
    if cycle:
        line, col = key_position(tasks, cycle[0])
        message = f"tasks: dependency cycle {' -> '.join(cycle)}"
        yield SpecError(message, path=path, line=line, col=col, field="tasks")
    if "timezone" in document and not _is_time_zone(document["timezone"]):
        line, col = key_position(document, "timezone")
        message = f"timezone: unknown IANA time zone {document['timezone']!r}"
        yield SpecError(message, path=path, line=line, col=col, field="timezone")
    if "schedule" in document:
        problem = _cron_problem(document["schedule"])
        if problem:
            line, col = key_position(document, "schedule")
            message = f"schedule: {problem}"
            yield SpecError(message, path=path, line=line, col=col, field="schedule")


def _duration_errors(document: Any, path: str) -> Iterator[SpecError]:
    owners = [(["defaults"], document.get("defaults") or {})]
    owners += [(["tasks", name], task) for name, task in document["tasks"].items()]
    for where, settings in owners:
        for key in DURATION_LIMITS:
            problem = _duration_problem(key, settings.get(key))
            if problem:
                line, col = key_position(settings, key)
                field = ".".join([*where, key])
                message = f"{field}: {problem}"
                yield SpecError(message, path=path, line=line, col=col, field=field)


def _duration_problem(key: str, value: Any) -> str | None:
    """Say why a well-formed duration is out of range; the schema checks its form."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        duration = parse_duration(value)
    except ValueError:
        return None
    except OverflowError:
        duration = timedelta.max
    limit = DURATION_LIMITS[key]
    if duration > limit:
        return f"{value} is too long: at most {limit.days}d"
    if key == "timeout" and duration == timedelta(0):
        return f"{value} is not a timeout: it must be positive (leave it out for none)"
    return None


def _find_cycle(needs: Mapping[str, list[str]]) -> list[str] | None:
    """Return one dependency cycle as [a, b, a], or None."""
    # NB: a loop, not recursion: a chain of thousands of tasks is a fine DAG.
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in needs:
        if start in state:
            continue
        state[start] = 1
        path, upstreams = [start], [iter(needs[start])]
        while upstreams:
            upstream = next(upstreams[-1], None)
            if upstream is None:
                state[path.pop()] = 2
                upstreams.pop()
            elif state.get(upstream) == 1:
                cycle = [*path[path.index(upstream) :], upstream]
                return cycle[::-1]  # read in the direction tasks run
            elif upstream in needs and upstream not in state:
                state[upstream] = 1
                path.append(upstream)
                upstreams.append(iter(needs[upstream]))
    return None


def _is_time_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _cron_problem(expression: str) -> str | None:
    from kdag.specs.cron import cron_problem

    return cron_problem(expression)


def _build(document: Any, path: str) -> DagSpec:
    defaults = document.get("defaults") or {}
    tasks = {
        str(name): _build_task(
            str(name),
            {
                **defaults,
                **task,
                "env": _merged_env(defaults.get("env"), task.get("env")),
            },
        )
        for name, task in document["tasks"].items()
    }
    return DagSpec(
        name=str(document["name"]),
        tasks=tasks,
        path=path,
        description=str(document.get("description", "")),
        owner=str(document.get("owner", "")),
        schedule=document.get("schedule"),
        timezone=str(document.get("timezone", "UTC")),
        catchup=bool(document.get("catchup", False)),
        concurrency=str(document.get("concurrency", "allow")),
        alerts_slack=(document.get("alerts") or {}).get("slack"),
    )


def _merged_env(
    defaults: Mapping[str, Any] | None, own: Mapping[str, Any] | None
) -> dict[str, EnvValue]:
    env: dict[str, EnvValue] = {}
    for name, value in {**(defaults or {}), **(own or {})}.items():
        is_ref = isinstance(value, Mapping)
        env[str(name)] = (
            SecretRef(str(value["secret"]), str(value["key"])) if is_ref else str(value)
        )
    return env


def _build_task(name: str, task: Mapping[str, Any]) -> TaskSpec:
    timeout = task.get("timeout")
    return TaskSpec(
        name=name,
        command=tuple(str(c) for c in task["command"]),
        image=str(task["image"]),
        args=tuple(str(a) for a in task.get("args") or ()),
        needs=tuple(str(n) for n in task.get("needs") or ()),
        env=task["env"],
        namespace=task.get("namespace"),
        service_account=task.get("serviceAccount"),
        resources=json.loads(json.dumps(task.get("resources") or {})),
        retries=int(task.get("retries", 0)),
        retry_delay=parse_duration(task.get("retryDelay", "1m")),
        timeout=parse_duration(timeout) if timeout is not None else None,
        description=str(task.get("description", "")),
    )
