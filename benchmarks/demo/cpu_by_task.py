"""Where a demo run's CPU goes: every process sampled from /proc while a command runs.

    python benchmarks/demo/cpu_by_task.py -- make demo          # the year
    python benchmarks/demo/cpu_by_task.py -- make demo FAST=1   # the short run
    python benchmarks/demo/cpu_by_task.py --report benchmarks/results/demo-cpu-<stamp>.json

The replay is CPU-bound on a small machine, so its wall time is the sum of what every process
burns divided by the cores. This runs the command, reads ``/proc/<pid>/stat`` of every process
twice a second, and attributes CPU seconds (user + system, only what was used while the command
ran) to:

* each Airflow task, by ``dag_id.task_id``: a task process names itself ``airflow worker --
  <task instance id>``, which the stack's Airflow metadata database maps to the task;
* the stack's long-running processes (scheduler, API server, DAG processor, triggerer, serving
  API, MLflow, Evidently UI), the demo's own process, and the deploy gate's clean-process load.

A process is sampled every 0.5 s, so the CPU of a task's last half second can be missed: the
per-task figures are a lower bound (compare "attributed" with "busy" in the report). Linux only.
The raw samples go to ``benchmarks/results/demo-cpu-<UTC stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
HZ = os.sysconf("SC_CLK_TCK")
TASK = re.compile(r"airflow worker -- ([0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12})")
#: substring of a command line -> its row in the report (first match wins)
KINDS = (
    ("airflow worker -- LocalExecutor", "airflow: LocalExecutor workers (task supervisors)"),
    ("airflow scheduler", "airflow: scheduler"),
    ("api_server", "airflow: API server"),
    ("airflow dag-processor", "airflow: DAG processor"),
    ("airflow triggerer", "airflow: triggerer"),
    ("multiprocessing.forkserver", "airflow: task forkserver"),
    ("include.mlops.serving", "serving API"),
    ("evidently ui", "Evidently UI"),
    ("load-check", "deploy gate `loads`: clean-process load"),
    ("tooling.demo", "the demo's own process"),
    ("mlflow", "MLflow server"),
)
#: a child started by multiprocessing's spawn (uvicorn's workers: MLflow's, or the serving API's
#: with MLOPS_SERVING_WORKERS > 1) says nothing of itself: it counts as what its parent is
SPAWNED = "multiprocessing.spawn"


def kind_of(cmdline: str) -> str:
    m = TASK.search(cmdline)
    if m:
        return "ti:" + m.group(1).replace("-", "")
    for needle, kind in KINDS:
        if needle in cmdline:
            return kind
    return "other"


def snapshot() -> dict[tuple[str, str], tuple[str, float]]:
    """(pid, start time) -> (kind, CPU seconds so far) for every process now."""
    procs: dict[str, tuple[str, str, str, float]] = {}  # pid -> (start, parent pid, command line, CPU s)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        procs[pid] = (fields[19], fields[1], cmd, (int(fields[11]) + int(fields[12])) / HZ)
    return {(pid, start): (kind_in(pid, procs), cpu) for pid, (start, _, _, cpu) in procs.items()}


def kind_in(pid: str, procs: dict[str, tuple[str, str, str, float]]) -> str:
    """What ``pid`` is; a spawned child is what its nearest parent that says so is."""
    seen = 0
    while pid in procs and seen < 8:
        cmd = procs[pid][2]
        if not cmd:
            return "kernel"
        if SPAWNED not in cmd:
            return kind_of(cmd)
        pid, seen = procs[pid][1], seen + 1
    return "other"


def cpu_totals() -> tuple[float, float]:
    """(all CPU time, idle time) of the machine so far, in seconds."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    return sum(f) / HZ, f[3] / HZ


def sample(command: list[str], interval: float = 0.5) -> dict:
    baseline = {k: cpu for k, (_, cpu) in snapshot().items()}  # what ran before counts from now
    used: dict[tuple[str, str], tuple[str, float]] = {}
    total0, idle0 = cpu_totals()
    started = time.monotonic()
    proc = subprocess.Popen(command)
    try:
        while proc.poll() is None:
            for key, (kind, cpu) in snapshot().items():
                prev = used.get(key)
                kind = prev[0] if prev and prev[0].startswith("ti:") else kind  # a task keeps its name
                used[key] = (kind, cpu - baseline.get(key, 0.0))
            time.sleep(interval)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
    total1, idle1 = cpu_totals()
    by: Counter[str] = Counter()
    for kind, cpu in used.values():
        by[kind] += max(cpu, 0.0)
    return {
        "command": command,
        "returncode": proc.returncode,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 1),
        "cores": os.cpu_count(),
        "cpu_s": round(total1 - total0, 1),
        "idle_s": round(idle1 - idle0, 1),
        "by": dict(by),
    }


def task_names(airflow_db: Path) -> dict[str, str]:
    """Task instance id -> dag_id.task_id. Without the SQLite database (a stack on PostgreSQL, or
    one reset since), the report says "(unknown task)" and still sums the task processes."""
    if not airflow_db.exists():
        return {}
    db = sqlite3.connect(f"file:{airflow_db}?mode=ro", uri=True)
    try:
        return {str(i).replace("-", ""): f"{d}.{t}" for i, d, t in db.execute("select id, dag_id, task_id from task_instance")}
    finally:
        db.close()


def report(raw: dict, airflow_db: Path, top: int = 40) -> str:
    names = task_names(airflow_db)
    cpu: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for kind, seconds in raw["by"].items():
        if kind.startswith("ti:"):
            kind = "task " + names.get(kind[3:], "(unknown task)")
            count[kind] += 1
        cpu[kind] += seconds
    busy = raw["cpu_s"] - raw["idle_s"]
    tasks = sum(v for k, v in cpu.items() if k.startswith("task "))
    lines = [
        f"`{' '.join(raw['command'])}` at {raw['when']}: {raw['wall_s']:.0f} s wall on {raw['cores']} cores; "
        f"busy {busy:.0f} CPU s, idle {raw['idle_s']:.0f} s; attributed {sum(cpu.values()):.0f} CPU s "
        f"({tasks:.0f} in {sum(count.values())} task processes)",
        "",
        "| CPU s | share of busy | what | processes | CPU s each |",
        "|---:|---:|---|---:|---:|",
    ]
    for kind, seconds in cpu.most_common(top):
        n = count.get(kind, 0)
        each = f"{seconds / n:.2f}" if n else ""
        lines.append(f"| {seconds:.0f} | {seconds / busy if busy > 0 else 0:.1%} | {kind} | {n or ''} | {each} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="print the table of an earlier run's raw JSON instead of running")
    parser.add_argument(
        "--airflow-db",
        type=Path,
        default=None,
        help="the stack's Airflow metadata database (SQLite), which names the task processes (default: the one under MLOPS_HOME)",
    )
    parser.add_argument("command", nargs="*", help="what to run and measure (after --)")
    args = parser.parse_args(argv)
    if args.airflow_db is None:
        sys.path.insert(0, str(ROOT))
        from include.mlops.settings import get_settings

        args.airflow_db = get_settings().airflow_home / "airflow.db"
    if args.report:
        print(report(json.loads(args.report.read_text()), args.airflow_db))
        return 0
    if not args.command:
        parser.error("give a command to measure after --, e.g. -- make demo")
    raw = sample(args.command)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"demo-cpu-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(raw, indent=1))
    print(f"\n{report(raw, args.airflow_db)}\n\nraw samples: {path}")
    return int(raw["returncode"] or 0)


if __name__ == "__main__":
    sys.exit(main())
