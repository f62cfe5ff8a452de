"""Which files of a DAG folder are DAG files.

Every `*.yaml` and `*.yml` below the folder is one, except in hidden folders
and what `.kdagignore` (at the top of the DAG folder) excludes: one glob
pattern a line, matched against paths relative to the folder; `#` starts a
comment; a pattern ending in `/` (or naming a folder) excludes all below it.
So a dbt project or other YAML that is not a DAG can live beside the DAGs:

    # .kdagignore
    nycflights/dbt/
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import PurePosixPath

IGNORE_FILE = ".kdagignore"
SUFFIXES = (".yaml", ".yml")


def ignore_patterns(text: str) -> list[str]:
    """Read the patterns of a `.kdagignore` file."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line.strip("/") if line != "/" else line for line in lines if line]


def is_dag_file(relative: str, patterns: list[str]) -> bool:
    """Tell whether the file at `relative` (to the DAG folder) is a DAG file."""
    path = PurePosixPath(relative)
    if path.suffix not in SUFFIXES or any(p.startswith(".") for p in path.parts):
        return False
    prefixes = [
        PurePosixPath(*path.parts[: i + 1]).as_posix() for i in range(len(path.parts))
    ]
    return not any(
        fnmatchcase(prefix, pattern) or fnmatchcase(path.name, pattern)
        for pattern in patterns
        for prefix in prefixes
    )
