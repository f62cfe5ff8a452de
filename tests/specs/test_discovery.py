"""Which files of a DAG folder count as DAG files (pure functions)."""

from __future__ import annotations

import pytest

from kdag.specs.discovery import ignore_patterns, is_dag_file

PATTERNS = ignore_patterns("# a comment\nnycflights/\n*.draft.yaml  # drafts\n\n")


def test_ignore_file_patterns_drop_comments_and_slashes() -> None:
    assert PATTERNS == ["nycflights", "*.draft.yaml"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("hello.yaml", True),
        ("team-a/loans.yml", True),
        ("nycflights/dbt/dbt_project.yml", False),
        ("nycflights/dbt/models/schema.yml", False),
        ("wip.draft.yaml", False),
        ("team-a/wip.draft.yaml", False),
        (".github/workflows/ci.yaml", False),
        ("README.md", False),
    ],
)
def test_yaml_files_count_unless_hidden_or_ignored(path: str, expected: bool) -> None:
    assert is_dag_file(path, PATTERNS) is expected
