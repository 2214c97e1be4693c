"""The live loop's value, from its own ops store: what users got, against what simpler policies would
have given them on the same rows.

The rows are the labelled requests as served (:meth:`Store.labelled_inference` on the champion and
challenger routes: what users actually got; shadow scores are not served), one per entity (its first
scoring). On those rows, per calendar month of event time and overall (the mean of the monthly
values of the spec's ``promotion.metric``: ROC AUC for the flights classifier, MAE for a regressor,
whose labels are the outcomes; and the rows):

* ``served``: the scores users got (the inference log's ``score``);
* ``first_champion``: the first version ever made champion (the deployment ledger) scoring the same
  rows offline with its registry artifact (:func:`load_version`), the features as logged;
* ``scheduled``: the counterfactual scheduled retraining: the spec's pipeline refitted every 7 days,
  no gates, on the labelled data the loop had at that moment (the training pool in the lake, a
  day's labels usable from its end plus the spec's label delay), built from the backtest's pieces
  (:class:`~include.mlops.steps.backtest.history.History` over the pool,
  :class:`~include.mlops.steps.backtest.models.Trainer`, :func:`~include.mlops.steps.backtest.baselines.schedule`):
  the same fits the backtest's weekly policy makes on the same pool.

:func:`compute_value` computes all three (``make demo`` prints it at its end); :func:`refresh_value`
updates the served / first-champion months a monitoring pass touched, in ``value.json`` under the
model's reports folder, which the status page reads (never computed on render).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.lake import Lake, atomic_write_text
from include.mlops.domain.roles import CHALLENGER, CHAMPION

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.domain.spec import Spec
    from include.mlops.runtime import Runtime
    from include.mlops.steps.backtest.models import Trainer

log = logging.getLogger(__name__)

#: Below this many labelled served rows the table says so instead of comparing.
MIN_ROWS = 200
#: The counterfactual schedule: refit every this many days.
SCHEDULE_DAYS = 7
COLUMNS = ("served", "first_champion", "scheduled", "scheduled_newest")
LABELS = {
    "served": "served (what users got)",
    "first_champion": "first champion, never replaced",
    "scheduled": f"scheduled retraining every {SCHEDULE_DAYS} days",
    "scheduled_newest": "the same on the newest labels, no week held back for a holdout",
}
VALUE_FILE = "value.json"


def value_path(lake: Lake) -> Path:
    """``<lake>/reports/<model>/value.json``: the realized value the status page shows."""
    return lake.root / "reports" / lake.model / VALUE_FILE


def load_version(rt: Runtime, version: str) -> Any:
    """The registry artifact of ``version`` (the one place this module loads a model)."""
    import mlflow
    import mlflow.sklearn

    from include.mlops.adapters.registry import quiet_model_imports

    mlflow.set_tracking_uri(rt.settings.mlflow_tracking_uri)
    quiet_model_imports()
    return mlflow.sklearn.load_model(f"models:/{rt.model_name}/{version}")


@dataclass(frozen=True)
class MonthValue:
    month: str
    rows: int
    served: float | None
    first_champion: float | None
    scheduled: float | None = None
    #: Blind weekly retraining on the newest labels (no week held back for a holdout).
    scheduled_newest: float | None = None


@dataclass(frozen=True)
class LoopValue:
    """Per-month metric (``metric``, ROC AUC unless the spec names another) of each column on the
    same served, labelled rows, and the overall line."""

    model: str
    first_champion: str | None
    rows: int
    months: list[MonthValue] = field(default_factory=list)
    #: Per column: the mean of its monthly values (None when a month lacks one), plus ``rows`` and ``months``.
    overall: dict[str, Any] = field(default_factory=dict)
    #: The counterfactual schedule: every how many days, how many refits, or why it is missing.
    scheduled: dict[str, Any] | None = None
    served_versions: list[str] = field(default_factory=list)
    #: Why there is no comparison (too few rows, no champion yet), else None.
    note: str | None = None
    #: The metric of every cell (the spec's ``promotion.metric``).
    metric: str = "roc_auc"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopValue:
        months = [MonthValue(**m) for m in d.get("months", [])]
        return cls(**{**d, "months": months})

    def table(self) -> str:
        """A fixed-width text table: one row per month, the mean of the months last."""
        name = "ROC AUC" if self.metric == "roc_auc" else self.metric + (" (lower is better)" if self.metric in ("mae", "rmse") else "")
        head = f"realized value of the loop ({self.model}): {name} on the {self.rows} labelled requests as served"
        if self.note:
            return f"{head}\n  {self.note}"
        computed = (self.scheduled or {}).get("retrains") is not None
        cols = [c for c in COLUMNS if not c.startswith("scheduled") or (computed and any(getattr(m, c) is not None for m in self.months))]
        names = {
            "served": "served",
            "first_champion": f"first (v{self.first_champion})",
            "scheduled": f"every {SCHEDULE_DAYS} d",
            "scheduled_newest": f"{SCHEDULE_DAYS} d newest",
        }

        def cell(v: float | None) -> str:
            return f"{'-' if v is None else f'{v:.4f}':>12}"

        def line(label: str, rows: int, values: dict[str, Any]) -> str:
            a, b = values.get("served"), values.get("first_champion")
            gain = "-" if a is None or b is None else f"{a - b:+.4f}"
            return f"{label:<8} {rows:>7} " + "".join(cell(values.get(c)) for c in cols) + f"{gain:>16}"

        title = f"{'month':<8} {'rows':>7} " + "".join(f"{names[c]:>12}" for c in cols) + f"{'served-first':>16}"
        lines = [head, title, "-" * len(title)]
        lines += [line(m.month, m.rows, asdict(m)) for m in self.months]
        lines.append(line("mean", int(self.overall.get("rows", self.rows)), self.overall))
        if self.scheduled and self.scheduled.get("retrains") is not None:
            lines.append(f"scheduled retraining: {self.scheduled['retrains']} refits, no gates")
        elif self.scheduled:
            lines.append(f"scheduled retraining not computed: {self.scheduled.get('reason')}")
        lines.append(f"served by versions {', '.join(self.served_versions) or 'none'}; " + "; ".join(LABELS[c] for c in cols))
        return "\n".join(lines)


# -- the rows --------------------------------------------------------------------------------------
def first_champion(rt: Runtime) -> str | None:
    """The first version ever made champion (the deployment ledger), or None."""
    for row in rt.store.list_ledger(rt.model_name, CHAMPION):
        if row["action"] == "set" and row["to_version"]:
            return str(row["to_version"])
    return None


def served_rows(rt: Runtime, *, event_from: datetime | None = None) -> pd.DataFrame:
    """The labelled requests as served (champion and challenger routes), one row per entity (its
    first scoring), sorted by event time: the spec's features as logged, and ``_t`` (event time),
    ``_y`` (label), ``_score`` (the served score), ``_version``."""
    import pandas as pd

    from include.mlops.domain.tasks import truth_column

    cols = ["id", "entity_id", "event_time", "score", "model_version", "features"]
    truth = truth_column(rt.spec.task)
    rows = rt.store.labelled_inference(rt.model_name, cols, routes=[CHAMPION, CHALLENGER], event_from=event_from, truth=truth)
    records = [
        {**(json.loads(f) if isinstance(f, str) else f or {}), "_id": i, "_e": str(e), "_t": t, "_score": s, "_version": str(v), "_y": y}
        for i, e, t, s, v, f, y in rows
        if t is not None and s is not None
    ]
    out = pd.DataFrame(records) if records else pd.DataFrame(columns=["_id", "_e", "_t", "_score", "_version", "_y"])
    out = out.sort_values("_id", kind="stable").drop_duplicates("_e")
    out["_t"] = pd.to_datetime(out["_t"])
    out["_y"] = out["_y"].astype(float if truth == "outcome" else int)
    return out.sort_values(["_t", "_e"], kind="stable").reset_index(drop=True)


def features(spec: Spec, served: pd.DataFrame) -> pd.DataFrame:
    return served.reindex(columns=spec.feature_names)


# -- the columns -----------------------------------------------------------------------------------
def _auc(y: np.ndarray, s: np.ndarray, metric: str = "roc_auc") -> float | None:
    """``metric`` of scores ``s`` against labels ``y`` (ROC AUC by default; a regressor's ``mae``,
    ``rmse`` or ``r2`` of predicted values against outcomes), None where it is undefined."""
    from include.mlops.domain.resampling import REGRESSION_METRICS, roc_auc
    from include.mlops.domain.tasks import evaluate

    if y.size == 0 or (metric not in REGRESSION_METRICS and y.min() == y.max()):
        return None
    if metric == "roc_auc":
        return round(float(roc_auc(y, s)), 4)
    value = evaluate("regression" if metric in REGRESSION_METRICS else "binary_classification", y, s).get(metric)
    return None if value is None or value != value else round(float(value), 4)


def monthly(served: pd.DataFrame, scores: dict[str, np.ndarray], metric: str = "roc_auc") -> tuple[list[MonthValue], dict[str, Any]]:
    """Per calendar month of event time: each column's ``metric``; overall: the mean of the months."""
    import numpy as np

    y = served["_y"].to_numpy()
    month = served["_t"].dt.strftime("%Y-%m").to_numpy()
    out = []
    for m in sorted(set(month)):
        idx = np.flatnonzero(month == m)
        values = {c: _auc(y[idx], scores[c][idx], metric) if c in scores else None for c in COLUMNS}
        out.append(MonthValue(m, int(idx.size), **values))
    return out, overall(out)


def overall(months: list[MonthValue]) -> dict[str, Any]:
    """Mean of the monthly AUCs per column, over the months where the served AUC is defined (a
    column missing in one of them has no mean)."""
    usable = [m for m in months if m.served is not None]
    out: dict[str, Any] = {"rows": sum(m.rows for m in months), "months": len(usable)}
    for c in COLUMNS:
        values = [getattr(m, c) for m in usable]
        out[c] = round(sum(values) / len(values), 4) if values and all(v is not None for v in values) else None
    return out


def score_with(model: Any, x: pd.DataFrame, task: str = "binary_classification") -> np.ndarray:
    import numpy as np

    from include.mlops.domain.tasks import scores

    return scores(task, model, x) if len(x) else np.zeros(0)  # type: ignore[arg-type]


def scheduled_scores(
    trainer: Trainer, served: pd.DataFrame, every_days: int = SCHEDULE_DAYS, *, newest: bool = False
) -> tuple[np.ndarray, int]:
    """The counterfactual schedule's scores of the served rows, and how many times it refitted.

    ``trainer`` (a backtest :class:`Trainer` over the pool, the loop's labelled data; one trainer
    for several schedules reuses their fits) plans and fits, as the backtest's weekly policy does,
    from the first served day: the first model on the labels usable then, a
    refit at the close of every ``every_days``-th day (on the loop's window, or with ``newest`` on
    the newest labelled days with no holdout held back, as the backtest's blind weekly policy);
    each served row is scored by the model answering on its event day. Raises ``TrainingRefused`` (or
    ``ValueError`` on an empty pool) when not even the first model can be trained."""
    import numpy as np

    from include.mlops.steps.backtest.baselines import schedule
    from include.mlops.steps.backtest.history import day_start

    h, spec = trainer.history, trainer.history.spec
    start = served["_t"].iloc[0].date()
    first = trainer.fit(trainer.plan(h.labelled_days(day_start(start))))
    segments = schedule(trainer, first, start, every_days, newest=newest)
    days = served["_t"].dt.normalize().to_numpy()
    x = features(spec, served)
    out = np.full(len(served), np.nan)
    for i, seg in enumerate(segments):
        mask = days >= np.datetime64(day_start(seg.since))
        if i + 1 < len(segments):
            mask &= days < np.datetime64(day_start(segments[i + 1].since))
        if mask.any():
            out[mask] = score_with(seg.fitted.pipe, x[mask], spec.task)
    refits = len({id(s.fitted) for s in segments[1:]} - {id(first)})
    return out, refits


def read_pool(lake: Lake) -> pd.DataFrame:
    """The whole training pool (every accepted batch), as the loop's training reads it."""
    from include.mlops.steps.training_window import load_pool, pool_days

    days = pool_days(lake)
    if not days:
        raise ValueError("the training pool is empty")
    return load_pool(lake, days[0], days[-1])[0]


def served_columns(rt: Runtime, champion: str, served: pd.DataFrame, load: Any) -> dict[str, np.ndarray]:
    """The served scores and the first champion's offline scores of the same rows."""
    x = features(rt.spec, served)
    first = score_with(load(rt, champion), x, rt.spec.task) if len(served) else served["_score"].to_numpy(dtype=float)
    return {"served": served["_score"].to_numpy(dtype=float), "first_champion": first}


def compute_value(rt: Runtime, *, scheduled: bool = True, event_from: datetime | None = None, load: Any = load_version) -> LoopValue:
    """The realized value table (see the module). ``load(rt, version)`` returns a version's model;
    ``scheduled=False`` leaves the counterfactual schedule out (it refits the pipeline weekly)."""
    from include.mlops.steps.training_window import TrainingRefused

    champion = first_champion(rt)
    served = served_rows(rt, event_from=event_from)
    base = LoopValue(
        rt.model_name,
        champion,
        len(served),
        served_versions=sorted(set(served["_version"]), key=_version_key),
        metric=rt.spec.promotion.metric,
    )
    if champion is None:
        return replace(base, note="no champion yet: nothing was served")
    if len(served) < MIN_ROWS:
        return replace(base, note=f"too few labelled served rows to compare ({len(served)}; at least {MIN_ROWS} needed)")
    scores = served_columns(rt, champion, served, load)
    plan: dict[str, Any] | None = None
    if scheduled:
        try:
            from include.mlops.steps.backtest.history import History
            from include.mlops.steps.backtest.models import Trainer

            # only scores (no monitoring references); both schedules share the first model
            trainer = Trainer(History.of(rt.spec, read_pool(rt.lake)), references=False)
            scores["scheduled"], refits = scheduled_scores(trainer, served)
            scores["scheduled_newest"], refits_newest = scheduled_scores(trainer, served, newest=True)
            plan = {"every_days": SCHEDULE_DAYS, "retrains": refits, "retrains_newest": refits_newest}
        except (TrainingRefused, ValueError) as exc:
            log.warning("the scheduled-retraining column is left out: %s", exc)
            plan = {"every_days": SCHEDULE_DAYS, "retrains": None, "reason": str(exc)}
    months, total = monthly(served, scores, rt.spec.promotion.metric)
    return replace(base, months=months, overall=total, scheduled=plan)


def _version_key(v: str) -> tuple[int, str]:
    return (int(v), v) if v.isdigit() else (1 << 30, v)


# -- the stored copy (status page) -----------------------------------------------------------------
def write_value(lake: Lake, value: LoopValue, *extra: Path) -> Path:
    """Write ``value.json`` under the model's reports folder (and to each of ``extra``)."""
    text = json.dumps(value.to_dict(), indent=1, sort_keys=True) + "\n"
    path = value_path(lake)
    for p in (path, *extra):
        atomic_write_text(p, text)
    return path


def read_value(lake: Lake) -> LoopValue | None:
    """The stored realized value, or None when there is none (or it is unreadable)."""
    try:
        return LoopValue.from_dict(json.loads(value_path(lake).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.warning("unreadable %s: %s", value_path(lake), exc)
        return None


def refresh_value(rt: Runtime, since: datetime | None = None, *, load: Any = load_version) -> LoopValue:
    """Recompute served vs first champion for the months from ``since``'s month (all months without
    ``since`` or a usable stored copy), keep the stored months before it, and rewrite the stored
    file. A month recomputed here has no scheduled-retraining figure (:func:`compute_value` with
    ``scheduled=True`` computes that column)."""
    stored, champion = read_value(rt.lake), first_champion(rt)
    if since is None or stored is None or stored.note or not stored.months or stored.first_champion != champion or champion is None:
        value = compute_value(rt, scheduled=False, load=load)
    else:
        start = datetime.combine(since.date().replace(day=1), datetime.min.time())
        served = served_rows(rt, event_from=start)
        fresh, _ = monthly(served, served_columns(rt, champion, served, load), rt.spec.promotion.metric)
        months = [m for m in stored.months if m.month < f"{start:%Y-%m}"] + fresh
        versions = sorted(set(stored.served_versions) | set(served["_version"]), key=_version_key)
        rows = sum(m.rows for m in months)
        value = LoopValue(
            rt.model_name, champion, rows, months, overall(months), stored.scheduled, versions, metric=rt.spec.promotion.metric
        )
    if all(m.scheduled is None for m in value.months):
        value = replace(value, scheduled=None)
    write_value(rt.lake, value)
    return value


def refresh_after_monitoring(rt: Runtime, windows: list[list[str] | None]) -> None:
    """After a monitoring pass: refresh the stored value from the month of the earliest window
    judged (less a window and the label delay: labels of earlier days may have landed since).
    Never fails the pass: a failure is logged and the stored value stays as it was."""
    starts = [datetime.fromisoformat(w[0]) for w in windows if w]
    if not starts:
        return
    since = min(starts) - timedelta(hours=rt.spec.monitoring.window_hours + rt.spec.label_delay_hours)
    try:
        value = refresh_value(rt, since)
        log.info("realized value: %s", value.note or {c: value.overall.get(c) for c in COLUMNS})
    except Exception as exc:  # the value is for people; the monitoring verdicts are what matters
        log.warning("the realized value was not refreshed: %s: %s", type(exc).__name__, exc)
