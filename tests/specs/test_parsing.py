"""DAG files through the real parser: ruamel.yaml, the JSON Schema, meaning checks.
Nothing is emulated."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kdag.errors import SpecErrors
from kdag.specs.model import SecretRef
from kdag.specs.parsing import parse_dag, parse_duration

GOOD = """\
name: loanfile-daily
description: Daily loan file export
owner: data-eng
schedule: "0 6 * * 1-5"
timezone: America/New_York
catchup: false
concurrency: forbid
defaults:
  image: registry.example.com/etl:2024.06.1
  namespace: data-jobs
  serviceAccount: etl
  resources: {requests: {cpu: 250m, memory: 512Mi}, limits: {memory: 1Gi}}
  retries: 2
  retryDelay: 1m
  timeout: 2h
  env:
    MODE: daily
    WAREHOUSE_URL: {secret: warehouse, key: url}
alerts:
  slack: data-alerts
tasks:
  extract:
    command: [python, -m, etl.extract, --date, "$(KDAG_LOGICAL_DATE)"]
  transform:
    image: registry.example.com/dbt:1.8
    command: [dbt, build, --select, loanfile]
    needs: [extract]
    env: {MODE: "no"}
  publish:
    command: [python, -m, etl.publish]
    needs: [transform]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as caught:
        parse_dag(text, "dags/x.yaml")
    return [str(e) for e in caught.value.errors]


def test_a_full_dag_file_parses_with_defaults_inherited() -> None:
    spec = parse_dag(GOOD, "dags/loanfile.yaml")

    assert spec.name == "loanfile-daily"
    assert spec.timezone == "America/New_York"
    assert spec.concurrency == "forbid"
    extract, transform = spec.tasks["extract"], spec.tasks["transform"]
    assert extract.image == "registry.example.com/etl:2024.06.1"
    assert transform.image == "registry.example.com/dbt:1.8"
    assert extract.retries == 2 and extract.max_attempts == 3
    assert extract.retry_delay == timedelta(minutes=1)
    assert extract.timeout == timedelta(hours=2)
    assert extract.env["WAREHOUSE_URL"] == SecretRef("warehouse", "url")
    assert extract.service_account == "etl"
    assert transform.needs == ("extract",)
    assert spec.downstream_of("extract") == {"transform", "publish"}


def test_yaml_1_2_keeps_no_as_a_string() -> None:
    spec = parse_dag(GOOD, "dags/loanfile.yaml")
    assert spec.tasks["transform"].env["MODE"] == "no"


def test_a_typo_in_a_key_is_an_error_at_its_line_with_a_suggestion() -> None:
    text = GOOD.replace('schedule: "0 6', 'scheudle: "0 6')
    assert problems(text) == [
        "dags/x.yaml:4:1: scheudle: unknown field (did you mean 'schedule'?)"
    ]


def test_an_unknown_key_inside_a_task_names_the_task() -> None:
    text = GOOD.replace("    needs: [extract]\n", "    need: [extract]\n")
    assert problems(text) == [
        "dags/x.yaml:27:5: tasks.transform.need: unknown field (did you mean 'needs'?)"
    ]


def test_a_duplicate_key_is_an_error() -> None:
    text = GOOD.replace("catchup: false\n", "catchup: false\ncatchup: true\n")
    (only,) = problems(text)
    assert only.startswith("dags/x.yaml:7:1: duplicate key")


def test_text_that_is_not_yaml_is_an_error_not_a_traceback() -> None:
    (only,) = problems("tasks: [\n  - {a: \n")
    assert only.startswith("dags/x.yaml:")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just words\n"])
def test_a_file_that_is_not_a_mapping_is_an_error(text: str) -> None:
    (only,) = problems(text)
    assert only.startswith("dags/x.yaml:1:1: a DAG file must be a mapping")


def test_an_unknown_need_is_an_error_at_the_item() -> None:
    text = GOOD.replace("needs: [transform]", "needs: [transfrom]")
    assert problems(text) == [
        "dags/x.yaml:31:13: tasks.publish.needs: no task named 'transfrom' "
        "(did you mean 'transform'?)"
    ]


def test_a_cycle_is_named() -> None:
    text = GOOD.replace(
        "    command: [python, -m, etl.extract",
        "    needs: [publish]\n    command: [python, -m, etl.extract",
    )
    assert problems(text) == [
        "dags/x.yaml:22:3: tasks: dependency cycle extract -> transform -> publish "
        "-> extract"
    ]


def test_a_two_task_cycle_reads_a_b_a() -> None:
    text = (
        "name: c\ndefaults: {image: x}\ntasks:\n"
        "  a: {command: [x], needs: [b]}\n  b: {command: [x], needs: [a]}\n"
    )
    (only,) = problems(text)
    assert only.endswith("dependency cycle a -> b -> a") or only.endswith(
        "dependency cycle b -> a -> b"
    )


def test_a_bad_cron_expression_is_an_error_at_schedule() -> None:
    assert problems(GOOD.replace('"0 6 * * 1-5"', '"0 25 * * *"')) == [
        "dags/x.yaml:4:1: schedule: '0 25 * * *' is not a valid cron expression: "
        "the hour (0-23) field '25' is out of range or malformed"
    ]
    (six_fields,) = problems(GOOD.replace('"0 6 * * 1-5"', '"0 0 6 * * 1-5"'))
    assert "needs 5 fields" in six_fields


def test_an_unknown_time_zone_is_an_error() -> None:
    assert problems(GOOD.replace("America/New_York", "America/Gotham")) == [
        "dags/x.yaml:5:1: timezone: unknown IANA time zone 'America/Gotham'"
    ]


def test_a_name_that_is_not_a_dns_label_is_an_error() -> None:
    (only,) = problems(GOOD.replace("name: loanfile-daily", "name: Loanfile_Daily"))
    assert only.startswith("dags/x.yaml:1:1: name: 'Loanfile_Daily' is not a DNS-1123")


def test_a_task_name_that_is_not_a_label_value_is_an_error() -> None:
    (only,) = problems(GOOD.replace("  publish:\n", "  publish now:\n"))
    assert only.startswith("dags/x.yaml:")
    assert "publish now" in only


def test_a_wrong_type_names_the_field() -> None:
    assert problems(GOOD.replace("  retries: 2", "  retries: two")) == [
        "dags/x.yaml:13:3: defaults.retries: must be a whole number, not 'two'"
    ]


def test_a_task_without_an_image_is_an_error() -> None:
    text = "name: n\ntasks:\n  a:\n    command: [x]\n"
    assert problems(text) == [
        "dags/x.yaml:3:3: tasks.a: no image (set tasks.a.image or defaults.image)"
    ]


def test_every_problem_of_a_file_is_reported_in_line_order() -> None:
    text = (
        "name: n\nscheudle: x\ntimezone: Nowhere/Land\ndefaults: {image: x}\n"
        "tasks:\n  a:\n    command: [x]\n    needs: [ghost]\n"
    )
    found = problems(text)
    assert [p.split(":")[1] for p in found] == ["2", "3", "8"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (90, timedelta(seconds=90)),
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
    ],
)
def test_durations_read_as_people_write_them(
    text: str | int, expected: timedelta
) -> None:
    assert parse_duration(text) == expected


ONE_TASK = "name: n\ndefaults: {image: x}\ntasks:\n  a:\n    command: [x]\n"


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("timeout: 3000000d", "tasks.a.timeout: 3000000d is too long: at most 30d"),
        ("timeout: 2592001", "tasks.a.timeout: 2592001 is too long: at most 30d"),
        ("retryDelay: 3000000d", "retryDelay: 3000000d is too long: at most 1d"),
        ('retryDelay: "99999999999d"', "99999999999d is too long: at most 1d"),
        ("retryDelay: 25h", "tasks.a.retryDelay: 25h is too long: at most 1d"),
    ],
)
def test_a_duration_beyond_its_limit_is_an_error(setting: str, says: str) -> None:
    (only,) = problems(f"{ONE_TASK}    {setting}\n")
    assert only.startswith("dags/x.yaml:6:5: ")
    assert only.endswith(says)


def test_a_default_duration_beyond_its_limit_names_defaults() -> None:
    text = ONE_TASK.replace("{image: x}", "{image: x, timeout: 31d}")
    assert problems(text) == [
        "dags/x.yaml:2:22: defaults.timeout: 31d is too long: at most 30d"
    ]


@pytest.mark.parametrize("value", ["0", '"0s"', "0h0m"])
def test_a_timeout_of_zero_is_an_error_not_no_timeout(value: str) -> None:
    (only,) = problems(f"{ONE_TASK}    timeout: {value}\n")
    assert "tasks.a.timeout: " in only and "it must be positive" in only


def test_durations_at_their_limits_are_valid() -> None:
    spec = parse_dag(f"{ONE_TASK}    timeout: 30d\n    retryDelay: 0\n", "x.yaml")
    assert spec.tasks["a"].timeout == timedelta(days=30)
    assert spec.tasks["a"].retry_delay == timedelta(0)


def test_a_long_chain_listed_downstream_first_is_valid() -> None:
    count = 1200
    tasks = "".join(
        f"  t{i}: {{command: [x], needs: [t{i - 1}]}}\n"
        for i in range(count - 1, 0, -1)
    )
    text = f"name: n\ndefaults: {{image: x}}\ntasks:\n{tasks}  t0: {{command: [x]}}\n"
    spec = parse_dag(text, "x.yaml")
    assert len(spec.tasks) == count
    assert spec.tasks["t1199"].needs == ("t1198",)


def test_a_cycle_at_the_end_of_a_long_chain_is_found() -> None:
    tasks = "".join(
        f"  t{i}: {{command: [x], needs: [t{i + 1}]}}\n" for i in range(1500)
    )
    last = "  t1500: {command: [x], needs: [t1499]}\n"
    (only,) = problems(f"name: n\ndefaults: {{image: x}}\ntasks:\n{tasks}{last}")
    assert only.endswith("dependency cycle t1499 -> t1500 -> t1499")


DURATION_FORMAT = "(write 30s, 5m, 1h30m or 2d, or a whole number of seconds)"


@pytest.mark.parametrize(
    ("setting", "shown"),
    [
        ('retryDelay: "1h30"', "'1h30'"),
        ("retryDelay: -1", "-1"),
        ("timeout: 1.5h", "'1.5h'"),
    ],
)
def test_a_malformed_duration_says_how_to_write_one(setting: str, shown: str) -> None:
    field = setting.split(":")[0]
    assert problems(f"{ONE_TASK}    {setting}\n") == [
        f"dags/x.yaml:6:5: tasks.a.{field}: {shown} is not a duration {DURATION_FORMAT}"
    ]


def test_a_malformed_default_duration_says_how_to_write_one() -> None:
    text = ONE_TASK.replace("{image: x}", "{image: x, timeout: '1.5h'}")
    assert problems(text) == [
        f"dags/x.yaml:2:22: defaults.timeout: '1.5h' is not a duration "
        f"{DURATION_FORMAT}"
    ]


@pytest.mark.parametrize(("name", "col"), [("1A", 11), ("A=B", 11)])
def test_a_bad_env_name_says_what_an_env_name_is_at_the_name(
    name: str, col: int
) -> None:
    assert problems(f"{ONE_TASK}    env: {{{name}: x}}\n") == [
        f"dags/x.yaml:6:{col}: tasks.a.env: {name!r} is not an environment variable "
        "name (letters, digits, '_', '-' and '.', not starting with a digit)"
    ]


def test_a_typo_in_a_secret_reference_names_the_key() -> None:
    assert problems(f"{ONE_TASK}    env: {{A: {{secrett: s, key: k}}}}\n") == [
        "dags/x.yaml:6:11: tasks.a.env.A: 'secret' is required",
        "dags/x.yaml:6:15: tasks.a.env.A.secrett: unknown field "
        "(did you mean 'secret'?)",
    ]


def test_a_wrong_type_is_said_in_yaml_words() -> None:
    text = ONE_TASK.replace("[x]", "x") + "    env: {A: [x]}\n"
    assert problems(text) == [
        "dags/x.yaml:5:5: tasks.a.command: must be a list, not 'x'",
        "dags/x.yaml:6:11: tasks.a.env.A: must be a string or a mapping, not a list",
    ]


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n", "a list"), ("42\n", "a number"), ("words\n", "a string")],
)
def test_a_file_that_is_not_a_mapping_says_what_it_is(text: str, kind: str) -> None:
    assert problems(text) == [
        f"dags/x.yaml:1:1: a DAG file must be a mapping with name and tasks, "
        f"this one is {kind}"
    ]


def test_a_second_yaml_document_is_one_dag_too_many() -> None:
    assert problems(f"{ONE_TASK}---\nname: m\n") == [
        "dags/x.yaml:6:1: one DAG per file: found a second YAML document"
    ]


def test_an_empty_task_is_one_error_not_two() -> None:
    assert problems("name: n\ntasks: {a: }\n") == [
        "dags/x.yaml:2:9: tasks.a: must be a mapping, not null"
    ]


def test_no_tasks_is_an_error() -> None:
    assert problems("name: n\ntasks: {}\n") == [
        "dags/x.yaml:2:1: tasks: must not be empty"
    ]
