"""Read a DAG file's YAML into data JSON can hold, or say where it cannot.

YAML is wider than JSON, and the schema, the controller and the database all
expect JSON. So, through ruamel.yaml (which keeps line and column of each
value):

- YAML 1.2's core schema: `no` stays a string, and so does `2024-01-01`
  (ruamel resolves timestamps even in 1.2; the core schema has none).
- Every mapping key is a string as written: `1:`, `true:`, `null:` and
  `[a]:` are errors, rather than keys that collide (1 == True) or break JSON.
- Tags that make other types (`!!binary`, `!!timestamp`, `!!set`, `!foo`),
  and NaN or infinity, are errors at their value.
- Anchors and aliases share one value in ruamel but are expanded by whatever
  walks the data, so a few hundred bytes can stand for billions of values:
  past `MAX_VALUES` (or `MAX_DEPTH` levels) the file is refused.

No I/O: the caller passes the text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Set
from datetime import date
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.scalarbool import ScalarBoolean

from kdag.errors import SpecError, SpecErrors

MAX_VALUES = 100_000  # a big DAG holds a few thousand
MAX_DEPTH = 32  # a DAG's deepest field is tasks.NAME.resources.limits.cpu
TOO_DEEP = f"values are nested too deeply (at most {MAX_DEPTH} levels)"
TOO_MANY = (
    f"too many values once anchors (&) and aliases (*) are expanded "
    f"(at most {MAX_VALUES:,})"
)


def load_yaml(text: str, path: str) -> Any:
    """Return the one mapping in `text`; raise SpecErrors if there is none."""
    yaml = YAML(typ="rt")
    yaml.version = (1, 2)
    yaml.Resolver = CoreSchemaResolver
    yaml.Constructor = StringKeyConstructor
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        raise SpecErrors([_yaml_error(exc, path)]) from exc
    except YAMLError as exc:
        raise SpecErrors([SpecError(f"invalid YAML: {exc}", path=path)]) from exc
    except RecursionError as exc:  # ruamel recurses once per level of nesting
        raise SpecErrors([SpecError(TOO_DEEP, path=path)]) from exc
    if not isinstance(document, Mapping):
        kind = "empty" if document is None else kind_of(document)
        message = (
            f"a DAG file must be a mapping with name and tasks, this one is {kind}"
        )
        raise SpecErrors([SpecError(message, path=path)])
    return document


def json_data(document: Any, path: str) -> tuple[Any, list[SpecError]]:
    """Return a copy of `document` as JSON data, and an error at each value that
    JSON cannot hold (copied as a string, so that the schema passes over it).

    Raise SpecErrors if the copy would be too deep or too big.
    """
    errors: list[SpecError] = []
    left = MAX_VALUES

    def copy(value: Any, where: list[Any]) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise SpecErrors([SpecError(TOO_MANY, path=path)])
        if len(where) > MAX_DEPTH:
            line, col = position(document, where)
            raise SpecErrors([SpecError(TOO_DEEP, path=path, line=line, col=col)])
        if isinstance(value, Mapping):
            # NB: only !!omap gets here with other keys; StringKeyConstructor
            # stops the rest. The entry is left out: its error says why.
            for key in value:
                if not isinstance(key, str):
                    bad_key = f"key {key!r} is {kind_of(key)}, not a string"
                    errors.append(_error_at(document, where, bad_key, path))
            return {
                k: copy(v, [*where, k]) for k, v in value.items() if isinstance(k, str)
            }
        if isinstance(value, list):
            return [copy(v, [*where, i]) for i, v in enumerate(value)]
        plain, problem = _plain_scalar(value)
        if problem:
            errors.append(_error_at(document, where, problem, path))
        return plain

    return copy(document, []), errors


def kind_of(value: Any) -> str:
    """Name the kind of a YAML value as its writer would."""
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (str, "a string"),
        ((bool, ScalarBoolean), "a boolean"),
        ((int, float), "a number"),
        (Mapping, "a mapping"),
        ((list, tuple), "a list"),
        (bytes, "binary data (!!binary)"),
        (date, "a timestamp (!!timestamp)"),
        (Set, "a set (!!set)"),
    ]
    if value is None:
        return "null"
    if isinstance(value, TaggedScalar):
        return f"a value tagged {value.tag}"
    found = (words for kind, words in kinds if isinstance(value, kind))
    return next(found, f"a {type(value).__name__}")


def position(document: Any, where: Sequence[Any]) -> tuple[int, int]:
    """Return the line and column of the key (or item) at `where`."""
    if not where:
        return 1, 1
    try:
        parent = node_at(document, where[:-1])
    except (KeyError, IndexError, TypeError):
        return 1, 1
    last = where[-1]
    if isinstance(parent, Mapping):
        return key_position(parent, last)
    try:
        line, col = parent.lc.item(last)
        return line + 1, col + 1
    except (AttributeError, KeyError, IndexError, TypeError):
        return own_position(parent)


def node_at(document: Any, where: Sequence[Any]) -> Any:
    node = document
    for part in where:
        node = node[part]
    return node


def key_position(node: Any, key: Any) -> tuple[int, int]:
    try:
        line, col = node.lc.key(key)
        return line + 1, col + 1
    except (AttributeError, KeyError, TypeError):
        return own_position(node)


def own_position(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return 1, 1
    return lc.line + 1, lc.col + 1


class CoreSchemaResolver(VersionedResolver):
    """Resolve plain scalars as YAML 1.2's core schema does: no timestamps."""

    def add_version_implicit_resolver(
        self, version: Any, tag: Any, regexp: Any, first: Any
    ) -> None:
        if tag != "tag:yaml.org,2002:timestamp":
            super().add_version_implicit_resolver(version, tag, regexp, first)


class StringKeyConstructor(RoundTripConstructor):
    """Refuse mapping keys that are not strings, before two of them collide."""

    def check_mapping_key(
        self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
    ) -> bool:
        if not isinstance(key, str):
            kind = kind_of(key)
            problem = (
                f"key {key_node.value or '(empty)'} is {kind}, not a string: "
                "put it in quotes"
                if key_node.id == "scalar"
                else f"a key must be a string, not {kind}"
            )
            raise ConstructorError(problem=problem, problem_mark=key_node.start_mark)
        is_new: bool = super().check_mapping_key(node, key_node, mapping, key, value)
        return is_new


def _yaml_error(exc: MarkedYAMLError, path: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = str(exc.problem or "invalid YAML")
    if "found another document" in problem:
        problem = "one DAG per file: found a second YAML document"
    if "duplicate key" in problem:
        problem = f"duplicate key: {problem.split('duplicate key')[-1].strip()}"
    return SpecError(problem, path=path, line=line, col=col)


def _plain_scalar(value: Any) -> tuple[Any, str | None]:
    """Return `value` as a JSON scalar, and why it cannot be one, if so."""
    if value is None or isinstance(value, bool | ScalarBoolean):
        return value if value is None else bool(value), None
    if isinstance(value, str):
        return str(value), None
    if isinstance(value, int):
        return int(value), None
    if isinstance(value, float) and math.isfinite(value):
        return float(value), None
    if isinstance(value, float):
        return str(value), f"{value} is not a finite number"
    problem = (
        f"{kind_of(value)} cannot be used here: write a string, a number, "
        "true or false, a list or a mapping"
    )
    return str(value), problem


def _error_at(document: Any, where: list[Any], problem: str, path: str) -> SpecError:
    line, col = position(document, where)
    field = ".".join(map(str, where))
    message = f"{field or 'the file'}: {problem}"
    return SpecError(message, path=path, line=line, col=col, field=field)
