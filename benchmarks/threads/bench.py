"""Thread-pool benchmark: the loop's task workloads with the libraries' default thread pools vs
one thread per task (``MLOPS_TASK_THREADS=1``, the stack's default), side by side in one run.

    make bench-threads                    # or: PYTHONPATH=. .venv/bin/python benchmarks/threads/bench.py
    make bench-threads ARGS="--repeats 5 --no-busy"

Each measurement is a fresh Python process (imports and data loading untimed) that runs one of
the loop's own code paths on the real 2013 flights table (``tooling.flights``, built into
``.local/cache`` once, as ``make demo`` does):

* **drift**: the monitoring pass's Evidently report (``include.mlops.steps.monitoring.drift_report``:
  ``DriftedColumnsCount`` + ``ValueDrift`` per judged column) on one week of flights against a
  5,000-row sample of the four weeks before;
* **gx**: ``include.mlops.domain.validation.validate_frame`` on four days' label batches (an ingest chunk);
* **train**: the spec's pipeline (``include.mlops.domain.pipelines.build_pipeline``: gradient boosting)
  fitted on 28 days and scored on the 7 after, as ``train_candidate`` did (the demo spec now trains
  on 56 days; the workload keeps 28 so its figures stay comparable).

Each runs with the thread pools as the libraries size them (OpenBLAS and OpenMP: one thread per
core) and with ``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1``, alternating, ``--repeats``
times. With ``--busy`` (the default) a second process keeps the other core busy meanwhile, as
Airflow's parallel tasks do in the demo. Reported: the median CPU seconds (user + system of all
the process's threads, ``getrusage``) and wall seconds of the workload alone. Prints a Markdown
table and writes ``benchmarks/results/threads-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

WORKLOADS = ("drift", "gx", "train")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
SETTINGS = {"library default": None, "one thread (stack default)": "1"}
FIRST_DAY = "2013-03-04"  # a Monday: 28 days of training/reference, then the week judged


def _frames() -> tuple[Any, Any, Any]:
    """The spec, the flights of the five weeks the workloads use, and the first judged day (untimed)."""
    import pandas as pd

    from include.mlops.domain.spec import load_spec
    from tooling.flights import load_flights

    spec = load_spec(ROOT / "include" / "specs" / "flights.yaml")
    flights = load_flights(ROOT / ".local" / "cache")
    t = flights[spec.time_column]
    start = pd.Timestamp(FIRST_DAY)
    return spec, flights[(t >= start - pd.Timedelta(days=28)) & (t < start + pd.Timedelta(days=7))].reset_index(drop=True), start


def _child(workload: str) -> dict[str, float]:
    import tooling.task_preload  # noqa: F401  (the libraries a task process starts with)

    spec, df, start = _frames()
    import pandas as pd

    t = df[spec.time_column]
    before, after = df[t < start].copy(), df[t >= start].copy()
    for frame in (before, after):
        frame[spec.target.name] = spec.target.derive(frame[spec.target.source_column]).astype("int8")
    if workload == "drift":
        from include.mlops.steps.monitoring import drift_report

        cur, ref = after[spec.feature_names], before[spec.feature_names].sample(n=5000, random_state=0).reset_index(drop=True)

        def run() -> Any:
            return drift_report(spec, cur.copy(), ref.copy())

    elif workload == "gx":
        from include.mlops.domain.validation import validate_frame
        from tooling.flights import day_slice

        days = [(start + pd.Timedelta(days=i)).date() for i in range(4)]
        batches = [(d, day_slice(df, d.isoformat(), spec.time_column)[spec.batch_columns]) for d in days]

        def run() -> Any:
            outcomes = [validate_frame(b, spec, d) for d, b in batches]
            assert all(o.passed for o in outcomes), [o.reason_codes for o in outcomes]
            return outcomes

    else:
        from include.mlops.domain.pipelines import build_pipeline

        features, target = spec.feature_names, spec.target.name

        def run() -> Any:
            pipe = build_pipeline(spec).fit(before[features], before[target].astype(int).to_numpy())
            return pipe.predict_proba(after[features])[:, 1]

    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
    run()
    wall = time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": usage.ru_utime + usage.ru_stime - cpu0, "wall_s": wall}


def _measure(workload: str, threads: str | None, timeout: float) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARS, threads))
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", workload],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{workload} (threads {threads or 'default'}) failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _burner() -> subprocess.Popen[bytes]:
    """A process that keeps one core busy (the demo's other task), at normal priority."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="measurements of each workload and setting (median reported)")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument("--no-busy", dest="busy", action="store_false", help="leave the other core idle")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds one measurement may take")
    p.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or args.repeats < 1:
        p.error(f"unknown workloads {unknown} (choose from {', '.join(WORKLOADS)})" if unknown else "--repeats must be at least 1")
    if not (ROOT / ".local" / "cache").is_dir():
        print("building the flights table into .local/cache first (once per machine)", file=sys.stderr)
    results: dict[str, dict[str, list[dict[str, float]]]] = {w: {s: [] for s in SETTINGS} for w in workloads}
    burner = _burner() if args.busy else None
    try:
        for i in range(args.repeats):
            for w in workloads:
                order = list(SETTINGS.items()) if i % 2 == 0 else list(reversed(SETTINGS.items()))
                for name, threads in order:
                    r = _measure(w, threads, args.timeout)
                    results[w][name].append(r)
                    print(f"[{i + 1}/{args.repeats}] {w:5s} {name:27s} {r['cpu_s']:6.2f} CPU s {r['wall_s']:6.2f} s wall", file=sys.stderr)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    rows = []
    for w in workloads:
        med = {s: {k: statistics.median(r[k] for r in results[w][s]) for k in ("cpu_s", "wall_s")} for s in SETTINGS}
        (d, one) = (med[s] for s in SETTINGS)
        rows.append({"workload": w, **{f"{s}": med[s] for s in SETTINGS}, "cpu_saved_share": 1 - one["cpu_s"] / d["cpu_s"]})
    print(f"\nthread pools per task, {os.cpu_count()} cores, other core {'busy' if args.busy else 'idle'}, median of {args.repeats}\n")
    print("| workload | CPU s, library default | CPU s, one thread | wall s, library default | wall s, one thread | CPU saved |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        d, one = r["library default"], r["one thread (stack default)"]
        cells = [f"{d['cpu_s']:.2f}", f"{one['cpu_s']:.2f}", f"{d['wall_s']:.2f}", f"{one['wall_s']:.2f}", f"{r['cpu_saved_share']:.0%}"]
        print(f"| {r['workload']} | " + " | ".join(cells) + " |")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = ROOT / "benchmarks" / "results" / f"threads-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": stamp, "cores": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(), "busy": args.busy}
    out.write_text(json.dumps({"meta": meta, "repeats": args.repeats, "rows": rows, "raw": results}, indent=1))
    print(f"\nraw: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
