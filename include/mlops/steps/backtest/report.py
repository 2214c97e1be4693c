"""The backtest's comparison: per-month ROC AUC (or the spec's ``promotion.metric``: a regressor's
MAE) of each policy on the same rows, their means, the loop's counts; as a dict (the JSON), a text
table and a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.domain.spec import LOWER_IS_BETTER

if TYPE_CHECKING:
    import numpy as np

#: The policies in the order the table shows them.
POLICIES = ("loop", "frozen", "weekly", "monthly", "weekly_newest", "oracle")
LABELS = {
    "loop": "the loop (current policy)",
    "frozen": "frozen first model",
    "weekly": "scheduled, every 7 days",
    "monthly": "scheduled, every 28 days",
    "weekly_newest": "scheduled, every 7 days, newest labels",
    "oracle": "oracle: best weekly model each month",
}


def monthly_auc(
    labels: np.ndarray, scores: dict[str, np.ndarray], month_spans: list[tuple[str, int, int]], lo: int, metric: str = "roc_auc"
) -> dict[str, Any]:
    """Per policy: ``metric`` (ROC AUC unless named) per month (rows ``a..b`` of the history, offset
    ``lo`` in the score arrays) and the mean over months."""
    from include.mlops.domain.resampling import point_metric, roc_auc

    def value(y: np.ndarray, s: np.ndarray) -> float:
        return float(roc_auc(y, s)) if metric == "roc_auc" else float(point_metric(_RESAMPLING.get(metric, metric), y, s))

    out: dict[str, Any] = {}
    for name, s in scores.items():
        per = {m: round(value(labels[a:b], s[a - lo : b - lo]), 4) for m, a, b in month_spans}
        values = [v for v in per.values() if not math.isnan(v)]
        out[name] = {"months": per, "mean": round(sum(values) / len(values), 4) if values else None}
    return out


#: Resamples of the days of each month behind the intervals of :func:`versus_loop`.
N_BOOT = 200


def versus_loop(
    labels: np.ndarray,
    scores: dict[str, np.ndarray],
    month_spans: list[tuple[str, int, int]],
    lo: int,
    days: np.ndarray,
    metric: str = "roc_auc",
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per policy other than the loop: the loop's mean monthly ``metric`` minus the policy's, with a
    95 % interval from a paired day-block bootstrap (each month's days drawn with replacement, the
    same draws for every policy: the rows of a day share its weather, so rows are not resampled one by
    one), and the share of resamples where the loop does at least as well."""
    import numpy as np

    from include.mlops.domain.resampling import block_bootstrap_metric

    names = list(scores)
    per_month = []
    for _, a, b in month_spans:
        per_month.append(
            block_bootstrap_metric(
                _RESAMPLING.get(metric, metric),
                labels[a:b],
                [scores[n][a - lo : b - lo] for n in names],
                days[a:b],
                n_boot=n_boot,
                seed=seed,
            )
        )
    means = {n: np.nanmean(np.vstack([m[i] for m in per_month]), axis=0) for i, n in enumerate(names)}
    lower = metric in LOWER_IS_BETTER
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        if n == "loop":
            continue
        d = means["loop"] - means[n]
        lo95, hi95 = np.nanpercentile(d, [2.5, 97.5])
        at_least = (d <= 0) if lower else (d >= 0)
        out[n] = {"ci95": [round(float(lo95), 4), round(float(hi95), 4)], "loop_at_least_as_good": round(float(at_least.mean()), 3)}
    return out


#: ``promotion.metric`` -> its name in ``domain.resampling``
_RESAMPLING = {"accuracy_score": "accuracy", "f1_score": "f1"}


def _cell(v: float, metric: str) -> str:
    """A month's value in 5 characters: ``.682`` for a metric in [0, 1], ``25.13`` for an error."""
    return f"{v:>5.3f}"[1:].rjust(5) if metric in ("roc_auc", "accuracy_score", "f1_score") else f"{v:>5.2f}"[:5].rjust(5)


def row_diff(auc: dict[str, Any], name: str) -> float:
    """The loop's mean minus policy ``name``'s."""
    return float(auc["loop"]["mean"]) - float(auc[name]["mean"])


def table(result: dict[str, Any]) -> str:
    """The comparison as a fixed-width text table (one row per policy, one column per month)."""
    auc = result["auc"]
    metric = result.get("metric", "roc_auc")
    month_names = list(next(iter(auc.values()))["months"])
    versus = result.get("versus_loop", {})
    head = (
        f"{'policy':<38} {'mean':>6} " + " ".join(f"{m[-2:]:>5}" for m in month_names) + f" {'fits':>5}  {'loop - this [95% interval]':>27}"
    )
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    lines = [f"mean of the monthly {metric} ({better} is better)", head, "-" * len(head)]
    for name in POLICIES:
        if name not in auc:
            continue
        row = auc[name]
        cells = " ".join(_cell(row["months"][m], metric) for m in month_names)
        fits = result["retrains"].get(name, "")
        mean = f"{row['mean']:>6.4f}" if metric in ("roc_auc", "accuracy_score", "f1_score") else f"{row['mean']:>6.2f}"
        v = versus.get(name)
        ci = f"{row_diff(auc, name):+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]" if v else ""
        lines.append(f"{LABELS[name]:<38} {mean} {cells} {fits!s:>5}  {ci:>27}".rstrip())
    if versus:
        lines.append(
            "loop - this: the loop's mean minus the policy's, with a 95 % interval from a paired bootstrap of each "
            "month's days; an interval across 0 is no evidence either way"
        )
    c = result["loop"]["counts"]
    lines.append("")
    lines.append(
        "loop: {r} retrains, {d} deployments, {p} promotions ({pr} refused), {rb} rollbacks "
        "({rr} releases removed, {cr} champions restored), {a} alerts, dataset drift in {dd}/{w} windows, "
        "decay in {dc}/{w}".format(
            r=c.get("retrains", 0),
            d=c.get("deployments", 0),
            p=c.get("promotions", 0),
            pr=c.get("promotions_refused", 0),
            rb=c.get("release_rollbacks", 0) + c.get("champion_rollbacks", 0),
            rr=c.get("release_rollbacks", 0),
            cr=c.get("champion_rollbacks", 0),
            a=c.get("alerts", 0),
            dd=c.get("windows_dataset_drift", 0),
            w=c.get("windows", 0),
            dc=c.get("windows_decay", 0),
        )  # fmt: skip
    )
    t = result["timing"]
    lines.append(f"wall time {t['wall_seconds']:.1f} s ({t['fit_seconds']:.1f} s for {t['fits']} fits, {t['score_seconds']:.1f} s scoring)")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Per-month ROC AUC of each policy, the loop's promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    auc = result["auc"]
    month_names = list(next(iter(auc.values()))["months"])
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    styles = {"loop": "-o", "frozen": ":", "weekly": "--", "monthly": "-.", "weekly_newest": "--", "oracle": ":"}
    for name in POLICIES:
        if name in auc:
            ax.plot(
                month_names, [auc[name]["months"][m] for m in month_names], styles[name], label=f"{LABELS[name]} ({auc[name]['mean']:.3f})"
            )
    for d in result["loop"]["decisions"]:
        if d["kind"] == "promotion" and d["outcome"] == "promote":
            month = d["at"][:7]
            if month in month_names:
                ax.axvline(month_names.index(month), color="0.85", zorder=0)
    metric = result.get("metric", "roc_auc")
    ax.set_ylabel(f"{'ROC AUC' if metric == 'roc_auc' else metric} (month)")
    ax.set_title(f"{result['spec']}: served quality per month (grey: a promotion in that month)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``backtest.json``, ``backtest.png`` and ``backtest.txt`` (the table) under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "backtest.json", "png": out / "backtest.png", "table": out / "backtest.txt"}
    paths["json"].write_text(json.dumps(result, indent=1, sort_keys=True, default=str) + "\n")
    paths["table"].write_text(table(result) + "\n")
    plot(result, paths["png"])
    return paths
