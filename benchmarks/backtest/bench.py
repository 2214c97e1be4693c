"""The backtest's wall time: the whole 2013 replay of the flights spec, timed from outside.

    make bench-backtest                   # or: PYTHONPATH=. .venv/bin/python benchmarks/backtest/bench.py
    make bench-backtest ARGS="--threads default --timeout 1200"

Runs ``make backtest``'s own entry point (``python -m tooling.backtest --spec include/specs/flights.yaml``)
once, in a fresh interpreter, with ``--out`` into a temporary folder (the user's ``.local/backtest``
is left alone). Measured from outside: the process's wall time (interpreter start, imports, reading
the flights, the replay, writing its JSON, plot and table), its CPU seconds and its peak RSS
(``os.wait4``: the kernel's accounting of that process alone), with the load average before and
after. Read from the backtest's own ``backtest.json``: its ``timing`` (the replay's wall time, the
seconds spent fitting and scoring, the number of fits) and the mean ROC AUC of each policy.

The anchor, from the same run: the seconds spent fitting the models alone (``timing.fit_seconds``,
the part no bookkeeping can remove), and the issue's budget, the whole year in at most 300 s on 2 cores.
By default the child runs with ``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1`` (the
stack's one thread per task, and how docs/backtest.md measured it); ``--threads default`` leaves the
libraries' pools as they size themselves. The flights table is built into ``.local/cache`` first
(untimed) when it is not there. Prints a summary and writes ``benchmarks/results/backtest-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_SPEC = ROOT / "include" / "specs" / "flights.yaml"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
BUDGET_SECONDS = 300.0  # issue 16: the whole 2013 year in at most 5 minutes on 2 cores

log = logging.getLogger("bench-backtest")


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
        **{name: pkg_version(name) for name in ("numpy", "pandas", "scipy", "scikit-learn")},
    }


def code_version() -> str:
    """The commit the run measured, ``+dirty`` when the tree had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def child_env(threads: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if threads != "default":
        env.update(dict.fromkeys(THREAD_VARS, threads))
    env["PYTHONPATH"] = str(ROOT)
    return env


def warm_flights_cache(env: dict[str, str]) -> None:
    """Build the flights table into .local/cache when it is missing (untimed, in its own process)."""
    code = "from pathlib import Path; from tooling.flights import load_flights; load_flights(Path('.local') / 'cache')"
    log.info("making sure the flights table is cached under .local/cache (untimed)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)


def run_backtest(spec: Path, out: Path, env: dict[str, str], timeout: float, stdout: Path) -> dict[str, Any]:
    """The backtest's entry point in a fresh interpreter: wall, CPU and peak RSS of exactly that process."""
    cmd = [sys.executable, "-m", "tooling.backtest", "--spec", str(spec), "--out", str(out)]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with stdout.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink)
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
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    wall = time.perf_counter() - t0
    return {
        "command": cmd,
        "process_wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit_code": proc.returncode,
        "timed_out": timed_out,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def summary(process: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The figures the table quotes: the process from outside, the replay's own timing, the anchor."""
    timing = result["timing"]
    return {
        "process": process,
        "timing": timing,
        "anchor": {
            "fit_seconds": timing["fit_seconds"],
            "fits": timing["fits"],
            "budget_seconds": BUDGET_SECONDS,
            "within_budget": process["process_wall_s"] <= BUDGET_SECONDS,
        },
        "auc_mean": {policy: v["mean"] for policy, v in result["auc"].items()},
        "retrains": result["retrains"],
        "history": result["history"],
        "spec": result["spec"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="the spec file (default: the flights demo's)")
    parser.add_argument("--threads", default="1", help="OMP/OpenBLAS/MKL threads of the child, or 'default' (default: 1)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before the backtest is killed")
    parser.add_argument("--results-dir", type=Path, default=HERE.parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    env = child_env(args.threads)
    warm_flights_cache(env)
    started = datetime.now(UTC)
    info: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "threads": args.threads,
        "load_at_start": os.getloadavg(),
    }
    log.info("machine: %s; load average %s; threads %s", info["machine"], info["load_at_start"], args.threads)
    if info["load_at_start"][0] > 1.5:
        log.warning(
            "load average %.2f: other processes share the cores, expect a slower run than on an idle machine", info["load_at_start"][0]
        )
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        out, printed = Path(tmp) / "out", Path(tmp) / "stdout.txt"
        log.info("the whole-year backtest of %s (about 4.5 minutes on an idle 2-core machine)", args.spec)
        process = run_backtest(args.spec, out, env, args.timeout, printed)
        if process["timed_out"] or process["exit_code"] != 0:
            raise SystemExit(f"the backtest failed: {json.dumps(process)}")
        result = json.loads((out / "backtest.json").read_text())
        table = printed.read_text()
    info["load_at_end"] = os.getloadavg()
    report = {**info, **summary(process, result), "backtest_table": table}
    p, t, a = report["process"], report["timing"], report["anchor"]
    print(table)
    print(
        f"\nprocess: {p['process_wall_s']:.1f} s wall, {p['cpu_s']:.1f} CPU s, {p['max_rss_mb']:.0f} MiB peak RSS"
        f" (load {p['load_before'][0]:.2f} before, {p['load_after'][0]:.2f} after)"
        f"\nreplay: {t['wall_seconds']:.1f} s, of which fitting {a['fit_seconds']:.1f} s ({a['fits']} fits),"
        f" scoring {t['score_seconds']:.1f} s; budget {a['budget_seconds']:.0f} s:"
        f" {'within' if a['within_budget'] else 'OVER'}"
    )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"backtest-{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"raw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
