"""YAML that JSON cannot hold, through the real parser (ruamel.yaml, the schema):
each is an error at its line, never a value the controller trips on later.
Nothing is emulated."""

from __future__ import annotations

import pytest

from kdag.errors import SpecErrors
from kdag.specs.parsing import parse_dag

HEAD = "name: n\ndefaults: {image: x}\n"
ONE_TASK = HEAD + "tasks:\n  a: {command: [x]}\n"
CANNOT = "cannot be used here: write a string, a number, true or false"


def problems(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as caught:
        parse_dag(text, "x.yaml")
    return [str(e) for e in caught.value.errors]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("timezone: !!binary aGVsbG8=", "timezone: binary data (!!binary)"),
        ("schedule: !!binary aGVsbG8=", "schedule: binary data (!!binary)"),
        (
            "description: !!timestamp 2024-01-01",
            "description: a timestamp (!!timestamp)",
        ),
        ("owner: !!set {a, b}", "owner: a set (!!set)"),
        ("owner: !team data", "owner: a value tagged !team"),
    ],
)
def test_a_value_of_a_type_json_cannot_hold_is_an_error_at_its_line(
    line: str, says: str
) -> None:
    assert problems(ONE_TASK.replace("tasks:", f"{line}\ntasks:")) == [
        f"x.yaml:3:1: {says} {CANNOT}, a list or a mapping"
    ]


def test_a_bad_value_inside_a_list_names_its_item() -> None:
    text = ONE_TASK.replace("[x]", "[x, !!binary aGVsbG8=]")
    (only,) = problems(text)
    assert only.startswith("x.yaml:4:20: tasks.a.command.1: binary data")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_infinity_are_errors(value: str) -> None:
    text = ONE_TASK.replace("[x]}", f"[x], resources: {{limits: {{cpu: {value}}}}}}}")
    (only,) = problems(text)
    assert only.endswith("is not a finite number")
    assert "tasks.a.resources.limits.cpu" in only


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("null", "key null is null, not a string: put it in quotes"),
        ("true", "key true is a boolean, not a string: put it in quotes"),
        ("1", "key 1 is a number, not a string: put it in quotes"),
        ("[a]", "a key must be a string, not a list"),
        ("{a: b}", "a key must be a string, not a mapping"),
    ],
)
def test_every_key_must_be_a_string_as_written(key: str, says: str) -> None:
    assert problems(ONE_TASK + f"  {key}: {{command: [x]}}\n") == [
        f"x.yaml:5:3: {says}"
    ]


def test_keys_1_and_true_are_not_reported_as_duplicates() -> None:
    (only,) = problems(ONE_TASK + "  1: {command: [x]}\n  true: {command: [x]}\n")
    assert only == "x.yaml:5:3: key 1 is a number, not a string: put it in quotes"


def test_quoted_keys_that_look_like_other_types_are_names() -> None:
    spec = parse_dag(
        ONE_TASK + '  "1": {command: [x]}\n  "true": {command: [x]}\n', "x"
    )
    assert list(spec.tasks) == ["a", "1", "true"]


def test_an_anchored_boolean_stays_a_boolean() -> None:
    spec = parse_dag(ONE_TASK.replace("tasks:", "catchup: &c true\ntasks:"), "x")
    assert spec.catchup is True


@pytest.mark.parametrize("depth", [40, 500])
def test_values_nested_too_deeply_are_an_error_not_a_recursion_error(
    depth: int,
) -> None:
    text = ONE_TASK.replace("[x]}", f"[x], args: {'[' * depth}{']' * depth}}}")
    (only,) = problems(text)
    assert only.endswith(": values are nested too deeply (at most 32 levels)")


def test_a_billion_laughs_is_refused_before_it_is_expanded() -> None:
    # 8 levels of anchors, each alias 10 times: 10**8 values in 500 bytes.
    lines = ["x0: &a0 [x]"]
    lines += [f"x{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = ONE_TASK + "\n".join(lines) + "\n"
    assert len(text) < 600
    assert problems(text) == [
        "x.yaml:1:1: too many values once anchors (&) and aliases (*) are "
        "expanded (at most 100,000)"
    ]


def test_anchors_and_aliases_within_reason_are_fine() -> None:
    text = HEAD + "tasks:\n  a: {command: &c [x, y]}\n  b: {command: *c}\n"
    assert parse_dag(text, "x").tasks["b"].command == ("x", "y")


def test_timestamps_stay_the_strings_written_as_yaml_1_2_says() -> None:
    text = ONE_TASK.replace(
        "[x]}", "[echo, 2024-01-01T10:00:00Z], env: {E: 2024-01-01 10:00:00.5Z}}"
    )
    spec = parse_dag(text.replace("tasks:", "owner: 2024-01-01\ntasks:"), "x")
    assert spec.owner == "2024-01-01"
    assert spec.tasks["a"].command == ("echo", "2024-01-01T10:00:00Z")
    assert spec.tasks["a"].env["E"] == "2024-01-01 10:00:00.5Z"


def test_an_ordered_map_with_a_number_key_is_an_error_at_the_map() -> None:
    text = ONE_TASK.replace("[x]}", "[x], env: !!omap [{1: a}, {B: b}]}")
    assert problems(text) == [
        "x.yaml:4:21: tasks.a.env: key 1 is a number, not a string"
    ]
