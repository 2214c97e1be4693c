"""Monitoring-pass benchmark: ``include.mlops.domain.drift`` vs Evidently's ``DataDriftPreset`` on the same data.

    make bench-monitoring                 # or: PYTHONPATH=. .venv/bin/python benchmarks/monitoring/bench.py
    make bench-monitoring ARGS="--sizes 100000 --repeats 1 --evidently-timeout 300"

For each window size (default 100k and 1M rows), untimed setup first:

1. synthetic flights-shaped data (``synth.py``: 20 numeric + 5 categorical columns, 12 of them
   deliberately shifted): a reference and a current window of the same size;
2. the window is written the way the inference log keeps it for monitoring,
   ``<tmp>/inference/<model>/day=YYYY-MM-DD/part-*.parquet`` (7 days, 2 parts a day); the reference
   to one parquet file (Evidently needs it raw);
3. ``reference_stats`` of the reference, saved as JSON (the training-time cost, reported apart).

Then, each in a fresh Python process so that wall time and peak memory are its own:

* **ours** (``--repeats`` times, median reported): read the window (``read_inference``), ``column_drift``
  and ``dataset_drift`` from the saved statistics;
* **Evidently** (once): read the raw reference and the window, ``Report([DataDriftPreset()])`` with
  the spec's column kinds, bounded by ``--evidently-timeout`` (reported when hit).

Peak memory is the child's max RSS from ``os.wait4`` (the kernel's own accounting of that process;
it also counts the parent's pages until ``exec``, so the parent stays small: the setup runs in a
child too), cross-checked with the child's own ``VmHWM``.
Agreement compares each column's verdict with Evidently's (its per-column test status). Prints a
Markdown table and writes everything to ``benchmarks/results/monitoring-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]

log = logging.getLogger("bench-monitoring")

#: Evidently's display names -> the method names ``include.mlops.domain.drift`` reports.
EVIDENTLY_METHODS = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "PSI": "psi",
    "Kullback-Leibler divergence": "kl_div",
}


# -- child processes ------------------------------------------------------------------------------
def _vm_hwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child_ours(args: argparse.Namespace) -> None:
    """One monitoring pass: read the window, test every column against the saved statistics."""
    t0 = time.perf_counter()
    from synth import CATEGORICAL, COLUMNS, spec_dict

    from include.mlops.adapters.lake import read_inference
    from include.mlops.domain.drift import column_drift, dataset_drift
    from include.mlops.domain.spec import parse_spec

    spec = parse_spec(spec_dict())
    t_import = time.perf_counter()
    stats = json.loads(Path(args.stats).read_text())
    current = read_inference(args.root, spec.name, args.start, args.end, columns=COLUMNS, categorical=CATEGORICAL)
    t_read = time.perf_counter()
    results = column_drift(current, stats, spec)
    verdict = dataset_drift(results)
    t_done = time.perf_counter()
    out = {
        "rows": len(current),
        "import_s": t_import - t0,
        "read_s": t_read - t_import,
        "drift_s": t_done - t_read,
        "pass_s": t_done - t_import,
        "vm_hwm_mb": _vm_hwm_mb(),
        "dataset": verdict.to_dict(),
        "columns": {r.column: {"method": r.method, "score": r.score, "drifted": r.drifted, "exact": r.exact} for r in results},
    }
    Path(args.out).write_text(json.dumps(out))


def child_evidently(args: argparse.Namespace) -> None:
    """Evidently's ``DataDriftPreset`` as-is on the full reference and window."""
    t0 = time.perf_counter()
    import pandas as pd
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset
    from synth import COLUMNS, spec_dict

    from include.mlops.adapters.lake import read_inference
    from include.mlops.domain.spec import parse_spec
    from include.mlops.steps.monitoring.reports import data_definition

    spec = parse_spec(spec_dict())
    t_import = time.perf_counter()
    reference = pd.read_parquet(args.reference)
    current = read_inference(args.root, spec.name, args.start, args.end, columns=COLUMNS)
    t_read = time.perf_counter()
    definition = data_definition(COLUMNS, spec)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition), Dataset.from_pandas(reference, data_definition=definition)
    )
    t_run = time.perf_counter()
    d = snapshot.dict()
    columns: dict[str, dict[str, Any]] = {}
    share = None
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            columns[cfg["column"]] = {"method": EVIDENTLY_METHODS.get(cfg["method"], cfg["method"]), "score": m["value"]}
        elif cfg["type"].endswith("DriftedColumnsCount"):
            share = m["value"]["share"]
    dataset_drifted = None
    for t in d["tests"]:
        params = t["metric_config"]["params"]
        if "column" in params and params["column"] in columns:
            columns[params["column"]]["drifted"] = t["status"] == "FAIL"
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset_drifted = t["status"] == "FAIL"
    out = {
        "rows": len(current),
        "import_s": t_import - t0,
        "read_s": t_read - t_import,
        "drift_s": t_run - t_read,
        "pass_s": t_run - t_import,
        "vm_hwm_mb": _vm_hwm_mb(),
        "dataset": {"drifted": dataset_drifted, "share_drifted": share},
        "columns": columns,
    }
    Path(args.out).write_text(json.dumps(out))


def run_child(kind: str, params: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run one pass in a fresh interpreter; wall time and max RSS of exactly that process."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = Path(f.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), kind, "--out", str(out_path)]
    for k, v in params.items():
        cmd += [f"--{k}", v]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    timed_out = False
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            timed_out = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    wall = time.perf_counter() - t0
    result: dict[str, Any] = {
        "process_wall_s": wall,
        "max_rss_mb": usage.ru_maxrss / 1024,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "timed_out": timed_out,
    }
    if not timed_out and proc.returncode == 0:
        result.update(json.loads(out_path.read_text()))
    elif not timed_out:
        result["error"] = f"exit code {proc.returncode}"
    out_path.unlink(missing_ok=True)
    return result


# -- the benchmark --------------------------------------------------------------------------------
def agreement(ours: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    cols = sorted(ev.get("columns", {}))
    same = [c for c in cols if ours["columns"][c]["drifted"] == ev["columns"][c].get("drifted")]
    methods = [c for c in cols if ours["columns"][c]["method"] == ev["columns"][c]["method"]]
    diffs = [
        abs(ours["columns"][c]["score"] - ev["columns"][c]["score"])
        for c in cols
        if ours["columns"][c]["score"] is not None and ev["columns"][c]["score"] is not None
    ]
    return {
        "columns": len(cols),
        "verdicts_agree": len(same),
        "verdict_agreement": len(same) / len(cols) if cols else None,
        "methods_agree": len(methods),
        "max_abs_score_diff": max(diffs) if diffs else None,
        "disagreements": [c for c in cols if c not in same],
        "dataset_verdict_agrees": ours["dataset"]["drifted"] == ev["dataset"]["drifted"],
    }


def child_setup(args: argparse.Namespace) -> None:
    """Untimed setup, in its own process so that the parent stays small (see ``run_child``)."""
    from synth import MODEL, make_frame, spec_dict, write_window

    from include.mlops.domain.drift import reference_stats
    from include.mlops.domain.spec import parse_spec

    spec = parse_spec(spec_dict())
    n, folder = int(args.rows), Path(args.root)
    reference = make_frame(n, current=False, seed=1)
    current = make_frame(n, current=True, seed=2)
    start, end = write_window(current, folder, MODEL, date(2013, 2, 2))
    del current
    reference.to_parquet(folder / "reference.parquet", index=False)
    t0 = time.perf_counter()
    stats = reference_stats(reference, spec)
    stats_s = time.perf_counter() - t0
    (folder / "reference_stats.json").write_text(json.dumps(stats, allow_nan=False))
    out = {"start": start.isoformat(), "end": end.isoformat(), "reference_stats_s": stats_s}
    Path(args.out).write_text(json.dumps(out))


def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    folder = workdir / f"n{n}"
    folder.mkdir(parents=True)
    log.info("[%d rows] generating the reference and the window, reference statistics (untimed)", n)
    setup = run_child("_setup", {"rows": str(n), "root": str(folder)}, timeout=1800)
    if "error" in setup:
        raise SystemExit(f"setup failed: {setup['error']}")
    stats_path, ref_path = folder / "reference_stats.json", folder / "reference.parquet"
    params = {"root": str(folder), "start": setup["start"], "end": setup["end"], "stats": str(stats_path)}

    runs = []
    for i in range(args.repeats):
        log.info("[%d rows] our pass %d/%d", n, i + 1, args.repeats)
        runs.append(run_child("_ours", params, timeout=600))
        if "error" in runs[-1]:
            raise SystemExit(f"our pass failed: {runs[-1]['error']}")
    ours = sorted(runs, key=lambda r: r["pass_s"])[len(runs) // 2]  # the median run
    ev: dict[str, Any] = {"skipped": True}
    if not args.skip_evidently:
        log.info("[%d rows] Evidently DataDriftPreset (timeout %.0f s)", n, args.evidently_timeout)
        ev = run_child("_evidently", {**params, "reference": str(ref_path)}, timeout=args.evidently_timeout)
    return {
        "rows": n,
        "reference_stats_s": setup["reference_stats_s"],
        "reference_stats_kb": stats_path.stat().st_size / 1024,
        "window_parquet_mb": sum(p.stat().st_size for p in (folder / "inference").rglob("*.parquet")) / 2**20,
        "ours_runs": [
            {k: r[k] for k in ("pass_s", "read_s", "drift_s", "process_wall_s", "max_rss_mb", "load_before", "load_after")} for r in runs
        ],
        "ours": ours,
        "ours_pass_s_median": statistics.median(r["pass_s"] for r in runs),
        "evidently": ev,
        "agreement": agreement(ours, ev) if "columns" in ev else None,
    }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: pkg_version(name) for name in ("numpy", "pandas", "pyarrow", "scipy", "evidently")},
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| rows per window | pass | wall (read + drift) | rows/s | peak RSS | process wall | load before/after "
        "| verdicts agreeing with Evidently |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, e, a = r["ours"], r["evidently"], r["agreement"]
        agree = f"{a['verdicts_agree']}/{a['columns']} ({100 * a['verdict_agreement']:.0f} %)" if a else "n/a"
        lines.append(
            f"| {r['rows']:,} | `include.mlops.domain.drift` | {o['pass_s']:.2f} s ({o['read_s']:.2f} + {o['drift_s']:.2f}) "
            f"| {r['rows'] / o['pass_s']:,.0f} | {o['max_rss_mb']:,.0f} MiB | {o['process_wall_s']:.2f} s "
            f"| {o['load_before']:.1f} / {o['load_after']:.1f} | {agree} |"
        )
        if e.get("skipped"):
            continue
        if e.get("timed_out"):
            lines.append(f"| {r['rows']:,} | Evidently `DataDriftPreset` | timeout after {e['process_wall_s']:.0f} s | | | | | |")
        elif "error" in e:
            lines.append(f"| {r['rows']:,} | Evidently `DataDriftPreset` | failed: {e['error']} | | | | | |")
        else:
            lines.append(
                f"| {r['rows']:,} | Evidently `DataDriftPreset` | {e['pass_s']:.2f} s ({e['read_s']:.2f} + {e['drift_s']:.2f}) "
                f"| {r['rows'] / e['pass_s']:,.0f} | {e['max_rss_mb']:,.0f} MiB | {e['process_wall_s']:.2f} s "
                f"| {e['load_before']:.1f} / {e['load_after']:.1f} | (reference) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="child")
    for name in ("_setup", "_ours", "_evidently"):
        p = sub.add_parser(name)
        for opt in ("root", "start", "end", "stats", "out", "reference", "rows"):
            p.add_argument(f"--{opt}")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="our passes per size (the median is reported)")
    parser.add_argument("--evidently-timeout", type=float, default=600.0, help="seconds before the Evidently run is killed")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if not args.child else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    if args.child == "_setup":
        return child_setup(args)
    if args.child == "_ours":
        return child_ours(args)
    if args.child == "_evidently":
        return child_evidently(args)

    started = datetime.now(UTC)
    info = {"started": started.isoformat(timespec="seconds"), "machine": machine(), "load_at_start": os.getloadavg()}
    log.info("machine: %s; load average %s", info["machine"], info["load_at_start"])
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        for n in args.sizes:
            results.append(bench_size(n, args, Path(tmp)))
            log.info(
                "[%d rows] done: %s", n, json.dumps({k: v for k, v in results[-1].items() if k in ("ours_pass_s_median", "agreement")})
            )
    info["load_at_end"] = os.getloadavg()
    report = table(results)
    print(report)
    for r in results:
        if r["agreement"] and r["agreement"]["disagreements"]:
            print(f"{r['rows']:,} rows: verdicts differ on {', '.join(r['agreement']['disagreements'])}")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"monitoring-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({**info, "results": results, "table": report}, indent=1, default=str))
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
