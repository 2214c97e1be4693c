"""Write one table of every benchmark's headline figures, each beside its anchor, to
benchmarks/README.md (between the ``<!-- bench-table -->`` markers).

    .venv/bin/python benchmarks/table.py [--demo-summary PATH]

Reads the newest raw result of each benchmark in ``benchmarks/results/`` (``make bench`` runs them
first) and the loop-latency figures of the newest demo run (``<MLOPS_HOME>/demo/summary.json``,
written by ``make demo`` / ``make demo-fast``). Raw results are git-ignored: a benchmark with no
raw result here keeps its rows of the table already in the README, marked as carried over; one
that never ran says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START, END = "<!-- bench-table -->", "<!-- /bench-table -->"
CARRIED = "carried over from a table written on"


def newest(prefix: str, anchored: bool = False) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest raw result; with ``anchored``, the newest whose run included the anchor server
    (a run with --skip-mlflow-serve has no anchor to stand beside)."""
    files = sorted((HERE / "results").glob(f"{prefix}-*.json"), reverse=True)
    for f in files:
        data = json.loads(f.read_text())
        if not anchored or any(r.get("server") == "mlflow models serve" for r in data.get("results", [])):
            return f, data
    return (files[0], json.loads(files[0].read_text())) if files else (None, None)


def newest_threads(busy: bool) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest thread-pool result run with the other core busy (or idle); (None, None) for
    idle when there is none (busy is the benchmark's default, so it always gets a row)."""
    for f in sorted((HERE / "results").glob("threads-*.json"), reverse=True):
        data = json.loads(f.read_text())
        if bool(data.get("meta", {}).get("busy")) == busy:
            return f, data
    return (None, None)


#: The serving benchmark's labels of its two-model deployment (``benchmarks/serving/bench.py``).
TWO_MODELS = "serving API, two models loaded"
ALONE = "single-row, 8 clients"
TOGETHER = "single-row, 4+4 clients, both routes at once"
ANCHOR = "mlflow models serve"


def _row(serving: dict[str, Any] | None, server: str, scenario: str, model: str | None = None) -> dict[str, Any] | None:
    """The result of ``server`` in ``scenario``; with ``model``, only that model's (results written
    before the benchmark named the model have none: ``model`` None matches them)."""
    for r in (serving or {}).get("results", []):
        if r["server"] == server and r["scenario"] == scenario and (model is None or r.get("model") == model):
            return dict(r)
    return None


def two_model_rows(data: dict[str, Any], src: str) -> list[list[str]]:
    """Rows of the serving API with two models loaded in one process: per model, 8 single-row
    clients on its route alone against ``mlflow models serve`` on the same model in the same run,
    then both routes at once, then the memory. None for a result without that part."""
    two = data.get("two_models") or {}
    models: dict[str, Any] = two.get("models") or {}
    rows = []
    for name, m in models.items():
        ours = _row(data, TWO_MODELS, ALONE, name)
        if not ours:
            continue
        anchor = _row(data, ANCHOR, ALONE, name)
        ratio = f" ({ours['req_per_s'] / anchor['req_per_s']:.0f}x)" if anchor and anchor["req_per_s"] else ""
        memory = f"; {m['model_pickle_bytes'] / 2**20:.1f} MiB in memory" if m.get("model_pickle_bytes") is not None else ""
        rows.append(
            [
                "serving API",
                f"two models loaded in one process: {name} ({m['task']}, `{m['route']}`), single-row requests, 8 clients",
                f"{ours['req_per_s']:.0f} req/s, p99 {ours['p99_ms']:.1f} ms{ratio}{memory}",
                f"{anchor['req_per_s']:.0f} req/s (`{ANCHOR}`, same model)" if anchor else "(anchor not run)",
                src,
            ]
        )
    together = [(name, _row(data, TWO_MODELS, TOGETHER, name)) for name in models]
    if rows and all(r for _, r in together):
        figure = "; ".join(f"{name} {r['req_per_s']:.0f} req/s, p99 {r['p99_ms']:.1f} ms" for name, r in together if r)
        figure += f" ({sum(r['req_per_s'] for _, r in together if r):.0f} req/s in all)"
        clients = " + ".join(str(r["clients"]) for _, r in together if r)
        rows.append(["serving API", f"two models loaded: both routes at once, {clients} single-row clients", figure, "p99 <= 50 ms", src])
    rss = two.get("process_rss_mb") or {}
    if rows and rss.get("models_loaded") is not None:
        per_model = ", ".join(
            f"{name} {m['model_pickle_bytes'] / 2**20:.1f} MiB" for name, m in models.items() if m.get("model_pickle_bytes") is not None
        )
        rows.append(
            [
                "serving API",
                "two models loaded: process RSS (per model: its models pickled, from `/health`)",
                f"{rss['models_loaded']:.0f} MiB ({per_model})",
                f"{rss['default_model_only']:.0f} MiB with the default model only loaded",
                src,
            ]
        )
    return rows


def serving_rows(path: Path | None, data: dict[str, Any] | None) -> list[list[str]]:
    src = f"`{path.name}`" if path else "no run"
    if data is None:
        return [["serving API", "(no result: run `make bench-serving`)", "", "", src]]
    rows = []
    default = data.get("default_model")  # None in results written before the benchmark named its models
    ours8, anchor8 = _row(data, "serving API", ALONE, default), _row(data, ANCHOR, ALONE, default)
    if ours8:
        anchor = f"{anchor8['req_per_s']:.0f} req/s (`mlflow models serve`)" if anchor8 else "(anchor not run)"
        figure = f"{ours8['req_per_s']:.0f} req/s, p99 {ours8['p99_ms']:.1f} ms"
        rows.append(["serving API", "single-row requests, 8 clients", figure, anchor, src])
    ours1 = _row(data, "serving API", "single-row, 1 client", default)
    floor = data.get("floor", {})
    if ours1 and floor.get("raw_1thread_1_p50_ms"):
        raw = floor["raw_1thread_1_p50_ms"]
        gap = ours1["p50_ms"] - raw
        rows.append(
            [
                "serving API",
                "single-row request, 1 client: p50",
                f"{ours1['p50_ms']:.2f} ms ({'+' if gap >= 0 else '-'}{abs(gap):.2f} ms against the model's `predict_proba`)",
                f"{raw:.2f} ms raw in-process `predict_proba`",
                src,
            ]
        )
        direct = floor.get("direct_1thread_1_p50_ms")
        if direct and (data.get("input_path") or {}):
            rows.append(
                [
                    "serving API",
                    "single-row request, 1 client: p50 over what it calls",
                    f"{ours1['p50_ms']:.2f} ms (+{ours1['p50_ms'] - direct:.2f} ms of request handling)",
                    f"{direct:.2f} ms the direct input path in-process (input path: {', '.join(sorted(set(data['input_path'].values())))})",
                    src,
                ]
            )
    log = data.get("inference_log") or {}
    if log:
        figure = f"{log['lost']} lost of {log['rows_answered_by_api']:,} answered"
        rows.append(["serving API", "inference log after load + SIGTERM", figure, "0 lost", src])
    two_rows = two_model_rows(data, src)
    rows += two_rows
    two_log = (data.get("two_models") or {}).get("inference_log") or {}
    if two_rows and two_log:
        figure = "; ".join(f"{name} {e['lost']} lost of {e['rows_answered_by_api']:,} answered" for name, e in two_log.items())
        rows.append(["serving API", "two models loaded: inference log after load + SIGTERM", figure, "0 lost", src])
    return rows


def load_rows(path: Path | None, data: dict[str, Any] | None) -> list[list[str]]:
    src = f"`{path.name}`" if path else "no run"
    if data is None:
        return [["load test", "(no result: run `make bench-load`)", "", "", src]]
    hold, logd = data["hold"], data["inference_log"]
    target = data["args"]["p99_ms"]
    return [
        [
            "load test",
            f"single-row requests held {hold['seconds']:.0f} s at the highest paced rate with p99 < {target:g} ms,"
            f" canary on, {data['args'].get('workers') or 1} API worker(s)",
            f"{hold['achieved_req_per_s']:.0f} req/s, p99 {hold['p99_ms']:.1f} ms,"
            f" {hold['non_2xx']} non-2xx, {hold['socket_errors']} socket errors",
            f"p99 < {target:g} ms, 0 errors",
            src,
        ],
        [
            "load test",
            "inference log after the hold + SIGTERM: records written / rows answered",
            f"{logd['log_records_written']:,} / {logd['rows_answered_by_api']:,} ({logd['lost']} lost,"
            f" {logd.get('duplicated', 0)} duplicated);"
            f" challenger answered {logd['challenger_share']:.1%} (configured {logd['canary_share_configured']:.0%})",
            "0 lost",
            src,
        ],
    ]


def monitoring_rows(path: Path | None, data: dict[str, Any] | None) -> list[list[str]]:
    src = f"`{path.name}`" if path else "no run"
    if data is None:
        return [["monitoring pass", "(no result: run `make bench-monitoring`)", "", "", src]]
    rows = []
    for r in data.get("results", []):
        ours = r.get("ours") or {}
        ev = r.get("evidently") or {}
        if not ours or not ev:
            continue
        rows.append(
            [
                "monitoring pass",
                f"drift on {r['rows']:,} rows: wall, peak RSS",
                f"{ours['pass_s']:.2f} s, {ours['max_rss_mb']:.0f} MiB",
                f"{ev['pass_s']:.2f} s, {ev['max_rss_mb']:.0f} MiB (Evidently `DataDriftPreset`)",
                src,
            ]
        )
        if r.get("agreement"):
            rows.append(["monitoring pass", f"verdicts agreeing with Evidently, {r['rows']:,} rows", r["agreement"], "all", src])
    return rows


def threads_rows(path: Path | None, data: dict[str, Any] | None, required: bool = True) -> list[list[str]]:
    src = f"`{path.name}`" if path else "no run"
    if data is None:
        return [["task thread pools", "(no result: run `make bench-threads`)", "", "", src]] if required else []
    other = "other core busy" if data.get("meta", {}).get("busy") else "other core idle"
    rows = []
    for r in data.get("rows", []):
        one, default = r["one thread (stack default)"], r["library default"]
        rows.append(
            [
                "task thread pools",
                f"{r['workload']} workload, {other}: CPU s, wall s",
                f"{one['cpu_s']:.2f} CPU s, {one['wall_s']:.2f} s (one thread, the stack's default)",
                f"{default['cpu_s']:.2f} CPU s, {default['wall_s']:.2f} s (the libraries' default pools)",
                src,
            ]
        )
    return rows


def backtest_rows(path: Path | None, data: dict[str, Any] | None) -> list[list[str]]:
    src = f"`{path.name}`" if path else "no run"
    if data is None:
        return [["backtest", "(no result: run `make bench-backtest`)", "", "", src]]
    p, a, t = data["process"], data["anchor"], data["timing"]
    threads = data.get("threads", "1")
    rows = [
        [
            "backtest",
            f"the flights spec's year through `make backtest`'s entry point, one process"
            f" ({'one thread' if threads == '1' else f'threads {threads}'}, load {p['load_before'][0]:.2f} at start):"
            f" wall, peak RSS",
            f"whole 2013 replay: {p['process_wall_s']:.0f} s wall, {p['max_rss_mb']:.0f} MiB peak"
            f" ({p['cpu_s']:.0f} CPU s; the replay itself {t['wall_seconds']:.0f} s)",
            f"fits alone: {a['fit_seconds']:.0f} s of it ({a['fits']} fits); budget {a['budget_seconds']:.0f} s",
            src,
        ]
    ]
    auc, retrains = data.get("auc_mean") or {}, data.get("retrains") or {}
    if "loop" in auc and "weekly" in auc:
        rows.append(
            [
                "backtest",
                "mean monthly ROC AUC of the same run, Feb-Dec 2013",
                f"{auc['loop']:.4f} (the loop, {retrains.get('loop', '?')} retrains)",
                f"{auc['weekly']:.4f} (retraining every 7 days, {retrains.get('weekly', '?')} retrains)"
                + (f"; {auc['weekly_newest']:.4f} on the newest labels" if "weekly_newest" in auc else ""),
                src,
            ]
        )
    return rows


def loop_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        return [["loop latency", "(no demo run: `make demo-fast`)", "", "", "no run"]]
    summary = json.loads(path.read_text())
    src = f"demo {summary['range'][0]}..{summary['range'][1]}, {summary['wall_seconds']} s"
    rows = []
    for s in summary.get("loop_latency", []):
        if s["stage"] == "first drifted day replayed":
            continue
        figure = f"{s['wall_s']:.0f} s wall, day +{s['event_days']}" if s["wall_s"] is not None else "did not happen"
        rows.append(["loop latency", f"first drifted day replayed -> {s['stage']}", figure, "(the replay's own clock)", src])
    return rows or [["loop latency", "(no drift-driven turn in the last demo run)", "", "", src]]


def summarize_monitoring(data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The monitoring bench stores runs per engine; reduce them to best-of per window size."""
    if data is None:
        return None
    out = []
    for r in data.get("results", []):
        ours = dict(r.get("ours") or {})
        if r.get("ours_pass_s_median") is not None:
            ours["pass_s"] = r["ours_pass_s_median"]  # median of the repeated runs
        item: dict[str, Any] = {"rows": r["rows"], "ours": ours, "evidently": r.get("evidently")}
        agreement = r.get("agreement") or {}
        if agreement:
            item["agreement"] = f"{agreement['verdicts_agree']}/{agreement['columns']} columns, dataset verdict " + (
                "agrees" if agreement.get("dataset_verdict_agrees") else "differs"
            )
        out.append(item)
    return {**data, "results": out}


def previous_rows(text: str) -> list[list[str]]:
    """The rows of the table already between the markers (none when there is no table)."""
    if START not in text or END not in text:
        return []
    block = text.split(START, 1)[1].split(END, 1)[0]
    rows = []
    for line in block.splitlines():
        cells = line.strip()[2:-2].split(" | ") if line.startswith("| ") and line.endswith(" |") else []
        if len(cells) == 5 and cells[0] != "benchmark":
            rows.append(cells)
    return rows


def previous_machine(text: str) -> str:
    """The machine the previous table names in its header (``2 cores, CPU model``)."""
    block = text.split(START, 1)[1] if START in text else ""
    found = re.search(r" on (\d+) cores \((.*?)\), Python ", block.split("\n\n", 1)[0])
    return f"{found.group(1)} cores, {found.group(2)}" if found else "an unknown machine"


def carry_over(rows: list[list[str]], previous: list[list[str]], machine: str) -> tuple[list[list[str]], list[str]]:
    """Raw results are git-ignored, so a machine may hold only some of them: a benchmark with no
    raw result here keeps its rows of the previous table instead of losing them, their source cell
    marked with the machine that table was written on (kept as is when already marked).
    Returns the rows and the benchmarks carried over."""
    out: list[list[str]] = []
    carried: list[str] = []
    for name in dict.fromkeys(r[0] for r in rows):
        new = [r for r in rows if r[0] == name]
        old = [r for r in previous if r[0] == name and r[4] != "no run"]
        if old and all(r[4] == "no run" for r in new):
            out += [r[:4] + [r[4] if CARRIED in r[4] else f"{r[4]}; {CARRIED} {machine}"] for r in old]
            carried.append(name)
        else:
            out += new
    return out, carried


def render(rows: list[list[str]], carried: list[str] | None = None) -> str:
    load = os.getloadavg()
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    head = (
        f"Written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `benchmarks/table.py` (`make bench` runs every benchmark first) "
        f"on {os.cpu_count()} cores ({cpu}), "
        f"Python {platform.python_version()}, load average {load[0]:.2f} when the table was written. "
        "Each figure comes from the raw result named in the last column; the anchor ran in the same run."
    )
    if carried:
        head += (
            f" The rows of {', '.join(carried)} are carried over from an earlier table (their raw results were"
            " not on this machine); their source cell names the machine of the table they come from."
        )
    head += "\n\n"
    lines = ["| benchmark | what | figure | anchor | source |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    home = Path(os.environ.get("MLOPS_HOME") or ROOT / ".local")
    parser.add_argument("--demo-summary", type=Path, default=home / "demo" / "summary.json")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md")
    args = parser.parse_args(argv)
    rows = serving_rows(*newest("serving", anchored=True))
    rows += load_rows(*newest("load"))
    mon_path, mon = newest("monitoring")
    rows += monitoring_rows(mon_path, summarize_monitoring(mon))
    for busy in (True, False):  # the newest run with the other core busy, and with it idle
        rows += threads_rows(*newest_threads(busy), required=busy)
    rows += backtest_rows(*newest("backtest"))
    rows += loop_rows(args.demo_summary)
    text = args.readme.read_text()
    table = render(*carry_over(rows, previous_rows(text), previous_machine(text)))
    block = f"{START}\n{table}{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.replace("\n", f"\n\n## All figures, one table\n\n{block}\n", 1)
    args.readme.write_text(text)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
