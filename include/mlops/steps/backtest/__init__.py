"""The backtest: a spec's labelled history replayed through the loop's own decision code, in event
time, in-process and deterministically (no Airflow, MLflow or servers), against frozen, scheduled
and oracle policies on the same rows (docs/backtest.md).

* :mod:`.history`: the rows by day, and when each day's labels may be used;
* :mod:`.models`: fits cached by training window, each model's scores computed once per row;
* :mod:`.loop` / :mod:`.release` / :mod:`.state`: the replayed loop;
* :mod:`.baselines`: frozen, weekly, every-28-days, weekly on the newest labels and oracle;
* :mod:`.report`: the comparison as JSON, a table and a plot.

``run_backtest(spec, raw)`` is the entry point (``make backtest`` calls it through tooling/backtest.py).
"""

from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.steps.backtest.history import History, day_start

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec
    from include.mlops.steps.backtest.models import Fitted, Trainer

__all__ = ["History", "run_backtest"]

log = logging.getLogger(__name__)

#: What exists only with servers and people, so the replay cannot judge it (said in every result).
NOT_REPLAYED = [
    "early window: errors, latency (p95 and ratio), CPU, memory and rejected requests (no serving process: never a breach)",
    "offline gates loads, signature and probe (no artifact to load: passed)",
    "Great Expectations suites of the training set and of the monitoring window's inputs",
    "probe consistency between serving and registry",
    "require_approval (counted as approved)",
]


def run_backtest(spec: Spec, raw: pd.DataFrame, *, start: date | None = None, end: date | None = None) -> dict[str, Any]:
    """Replay ``raw`` (rows shaped like the spec's label batches) from ``start`` to ``end``: the
    first calendar month trains the first model; every later row is scored by every policy."""
    from include.mlops.steps.backtest import baselines, report
    from include.mlops.steps.backtest.loop import Loop, window_days
    from include.mlops.steps.backtest.models import Trainer

    started = time.perf_counter()
    h = History.of(spec, raw, start=start, end=end)
    serve_from = (h.first.replace(day=28) + timedelta(days=4)).replace(day=1)
    if serve_from > h.last:
        raise ValueError("the history must reach past its first calendar month (that month trains the first model)")
    trainer = Trainer(h)
    first = trainer.fit(trainer.plan(h.labelled_days(day_start(serve_from))))
    loop = Loop(h, trainer, first, serve_from)
    state = loop.run()
    lo = h.span(serve_from, h.last)[0]
    spans = baselines.months(h, serve_from)
    scores, retrains, chosen = _policies(trainer, first, serve_from, lo, spans)
    scores = {"loop": loop.served_scores[lo:], **scores}
    retrains["loop"] = state.counts.get("retrains", 0)
    days = h.day_index()  # each row's day
    result: dict[str, Any] = {
        "spec": spec.name,
        "history": {
            "first": h.first.isoformat(),
            "last": h.last.isoformat(),
            "rows": len(h.frame),
            "scored_from": serve_from.isoformat(),
            "scored_rows": len(h.frame) - lo,
        },
        "settings": {
            "label_delay_hours": spec.label_delay_hours,
            "monitoring_window_days": window_days(spec),
            "drift_calibration": spec.monitoring.drift_calibration.model_dump(),
            "training_window_days": spec.training.window_days,
            "holdout_days": spec.training.holdout_days,
            "refit_with_holdout": spec.training.refit_with_holdout,
        },
        # the spec's promotion.metric per month (key "auc" for every task: the flights' ROC AUC as before)
        "auc": report.monthly_auc(h.labels, scores, spans, lo, spec.promotion.metric),
        **({} if spec.promotion.metric == "roc_auc" else {"metric": spec.promotion.metric}),
        "versus_loop": report.versus_loop(h.labels, scores, spans, lo, days, spec.promotion.metric),
        "retrains": {name: retrains[name] for name in ("loop", "frozen", "weekly", "monthly", "weekly_newest")},
        "oracle_choices": dict(zip([m for m, _, _ in spans], chosen, strict=True)),
        "loop": {
            "counts": dict(sorted(state.counts.items())),
            "versions": {
                v: {
                    "window": f.window.to_dict(),
                    f"holdout_{spec.deployment.primary_metric}": round(f.metrics[spec.deployment.primary_metric], 4),
                    "calibrated": f.reference.calibration is not None,
                }
                for v, f in state.versions.items()
            },
            "ledger": [{"action": r.action, "from": r.from_version, "to": r.to_version} for r in state.ledger],
            "decisions": state.decisions,
        },
        "not_replayed": NOT_REPLAYED,
    }
    result["timing"] = {
        "wall_seconds": round(time.perf_counter() - started, 1),
        "fit_seconds": round(trainer.fit_seconds, 1),
        "score_seconds": round(trainer.score_seconds, 1),
        "fits": len(trainer.fits) + len(trainer.refits),
    }
    return result


def _policies(
    trainer: Trainer, first: Fitted, serve_from: date, lo: int, spans: list[tuple[str, int, int]]
) -> tuple[dict[str, Any], dict[str, int], list[str]]:
    """Every policy but the loop on rows ``lo..``: their scores, their retrains, the oracle's choices."""
    from include.mlops.steps.backtest import baselines

    weekly = baselines.schedule(trainer, first, serve_from, 7)
    monthly = baselines.schedule(trainer, first, serve_from, 28)
    newest = baselines.schedule(trainer, first, serve_from, 7, newest=True)
    oracle, chosen = baselines.oracle_scores(trainer, weekly, spans, lo)
    scores = {
        "frozen": trainer.scores(first, lo, len(trainer.history.frame)).copy(),
        "weekly": baselines.scheduled_scores(trainer, weekly, lo),
        "monthly": baselines.scheduled_scores(trainer, monthly, lo),
        "weekly_newest": baselines.scheduled_scores(trainer, newest, lo),
        "oracle": oracle,
    }
    retrains = {"frozen": 0, "weekly": len(weekly) - 1, "monthly": len(monthly) - 1, "weekly_newest": len(newest) - 1}
    return scores, retrains, chosen
