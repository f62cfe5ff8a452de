"""Print kdag's speed and memory figures (a benchmark, not a test).

1. A chain of 20 tasks each running `true`, through `kdag run` with the local
   launcher: wall time of the whole command, and the gap between one task's
   end and the next one's start, from the run's own records.
2. `kdag --version` and `kdag validate` of one file: wall time.
3. `kdag up` on the embedded defaults against dags-example/, idle: PSS of the
   process tree.

Run: .venv/bin/python benchmarks/run_all.py
"""

from __future__ import annotations

import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
KDAG = str(Path(sys.executable).parent / "kdag")


def chain_dag(n: int = 20) -> str:
    lines = ["name: chain", "defaults: {image: busybox}", "tasks:"]
    for i in range(n):
        needs = f", needs: [t{i - 1}]" if i else ""
        lines.append(f'  t{i}: {{command: ["true"]{needs}}}')
    return "\n".join(lines) + "\n"


def bench_chain(scratch: Path, repeats: int = 5) -> None:
    dag = scratch / "chain.yaml"
    dag.write_text(chain_dag())
    walls, gaps, engine_spans = [], [], []
    for i in range(repeats):
        db_file = scratch / f"chain-{i}.db"
        start = time.perf_counter()
        subprocess.run(
            [KDAG, "run", str(dag), "--db-url", f"sqlite:///{db_file}"],
            check=True,
            capture_output=True,
        )
        walls.append(time.perf_counter() - start)
        engine = sa.create_engine(f"sqlite:///{db_file}")
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT a.started_at, a.ended_at FROM attempts a "
                    "JOIN tasks t ON t.id = a.task_id ORDER BY a.started_at"
                )
            ).all()
            span = conn.execute(sa.text("SELECT created_at, ended_at FROM runs")).one()
        engine.dispose()
        times = [(parse(s), parse(e)) for s, e in rows]
        gaps += [(b[0] - a[1]).total_seconds() for a, b in itertools.pairwise(times)]
        span_s = (parse(span[1]) - parse(span[0])).total_seconds()
        engine_spans.append(span_s)
    print("20 chained `true` tasks, local launcher, `kdag run`:")
    print(
        "  whole command (process start to exit): "
        f"median {statistics.median(walls):.3f} s"
        f", max {max(walls):.3f} s over {repeats} runs"
    )
    print(
        "  run created to run succeeded: "
        f"median {statistics.median(engine_spans):.3f} s"
    )
    print(
        f"  task end to next task start: median {statistics.median(gaps) * 1000:.1f} ms"
        f", p95 {sorted(gaps)[int(len(gaps) * 0.95)] * 1000:.1f} ms"
    )


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def bench_startup(scratch: Path, repeats: int = 10) -> None:
    one = ROOT / "dags-example" / "hello.yaml"
    if not one.exists():
        one = scratch / "chain.yaml"
    for label, argv in (
        ("kdag --version", [KDAG, "--version"]),
        ("kdag validate ONE_FILE", [KDAG, "validate", str(one)]),
    ):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        print(
            f"{label}: median {statistics.median(times):.3f} s, "
            f"max {max(times):.3f} s over {repeats}"
        )


def pss_kib(pid: int) -> int:
    """PSS of a process and all its descendants, in KiB."""
    total = 0
    for child in [pid, *descendants(pid)]:
        try:
            text = Path(f"/proc/{child}/smaps_rollup").read_text()
        except FileNotFoundError:
            continue
        total += next(
            int(line.split()[1])
            for line in text.splitlines()
            if line.startswith("Pss:")
        )
    return total


def descendants(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found += [int(entry.name), *descendants(int(entry.name))]
    return found


def bench_idle_memory(scratch: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            KDAG,
            "up",
            "--repo",
            str(ROOT),
            "--path",
            "dags-example",
            "--port",
            str(port),
            "--data-dir",
            str(scratch / "up"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=scratch,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/v1/dags", timeout=2
                )
                break
            except OSError:
                time.sleep(0.2)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
        time.sleep(10)  # idle: let the loop tick a few times
        print(
            f"kdag up, idle (controller + web, embedded defaults): PSS "
            f"{pss_kib(process.pid) / 1024:.1f} MB (process tree)"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "0")
    with tempfile.TemporaryDirectory(prefix="kdag-bench-") as scratch:
        bench_chain(Path(scratch))
        bench_startup(Path(scratch))
        bench_idle_memory(Path(scratch))


if __name__ == "__main__":
    main()
