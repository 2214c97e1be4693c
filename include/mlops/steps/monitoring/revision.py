"""Late labels: a judged window's realized quality is revised as its labels keep arriving.

A ``monitor`` decision records the realized quality (:func:`.checks.realized_quality`: the
version's labelled predictions over the ``quality_days`` before the window's end) from the labels
that had arrived when the window was judged: the last ``label_delay_hours`` of the window have
none yet, and a batch quarantined then re-sent arrives later still. After each ``ingest_outcomes``
run that accepted a batch, :func:`revise_window_quality` looks at the most recent judged windows
(:data:`REVISION_WINDOWS`, or ``monitoring.trend_windows`` when larger): a window whose labelled-row
count changed since it was last measured is measured again on every label now present and the
result recorded as a revision (``window_quality`` in the ops store: labelled rows, metric value,
revised_at). The verdict itself stays as it was.

The revised value is what the consumers read: the trend test's history
(:func:`.checks.quality_history`, via :func:`live_of`) and the status page (:func:`revised_summary`:
the value with "revised" and its labelled rows). When a revision shows a decay the first verdict
missed (the decay rule, ``monitoring.max_quality_drop``, now holds and the verdict had no
``quality_decay``), it is recorded once per window as a ``quality_revision`` decision (outcome
``decay``, reason code ``decay_revised``) and, for a window the version served as champion, raised
as the critical ``performance_degraded`` alert of that version (the same incident as monitoring's
own decay alert: a healthy window resolves it). It emits no ``performance_degraded`` event: the
next window's verdict, whose trailing labelled days include these labels, does if the decay lasts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.store import WindowKey, window_key
from include.mlops.domain.roles import CHAMPION
from include.mlops.steps.monitoring.checks import Summary, judge_decay, quality_of
from include.mlops.steps.monitoring.export import PROBE_PREFIX, labelled

if TYPE_CHECKING:
    from include.mlops.domain.spec import Monitoring
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)

#: How many of the most recent judged windows a revision looks at (every version judged on them).
REVISION_WINDOWS = 14
#: The decision kind and reason code of a decay that only the late labels showed.
REVISION_KIND = "quality_revision"
DECAY_REVISED = "decay_revised"
#: The routes realized quality counts (``export.labelled``).
ROUTES = ("champion", "challenger", "shadow")


@dataclass(frozen=True)
class Revision:
    """One window's realized quality, before and after the labels that arrived since."""

    version: str
    window_start: str
    window_end: str
    role: str
    metric: str
    labelled_rows_before: int
    labelled_rows: int
    value_before: float | None
    value: float | None
    reason_code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        def v(x: float | None) -> str:
            return "-" if x is None else f"{x:.4f}"

        flag = f" ({self.reason_code})" if self.reason_code else ""
        return (
            f"v{self.version} {self.window_start[:16]}..{self.window_end[:16]}: {self.metric} {v(self.value_before)} on "
            f"{self.labelled_rows_before} -> {v(self.value)} on {self.labelled_rows} labelled rows{flag}"
        )


# -- pure: what each consumer reads ----------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (PostgreSQL's json refuses NaN and
    infinity); numpy scalars become plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def first_quality(decision: Mapping[str, Any]) -> dict[str, Any] | None:
    """The realized quality the ``monitor`` decision recorded, or None when the window was not
    judged on quality (too few rows)."""
    inputs = decision.get("inputs")
    quality = inputs.get("quality") if isinstance(inputs, dict) else None
    return dict(quality) if isinstance(quality, dict) and isinstance(quality.get("labelled_rows"), int) else None


def current_revision(decision: Mapping[str, Any], revisions: Mapping[WindowKey, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest revision of this decision's window, if it revises this decision (a window judged
    again with ``force`` starts over from its new verdict)."""
    rev = revisions.get(window_key(dict(decision))) if decision.get("window_end") is not None else None
    return rev if rev is not None and rev.get("decision_id") == decision.get("id") else None


def current_quality(decision: Mapping[str, Any], revisions: Mapping[WindowKey, Mapping[str, Any]]) -> dict[str, Any] | None:
    """The window's realized quality as last measured: its newest revision, else its verdict's."""
    first = first_quality(decision)
    rev = current_revision(decision, revisions)
    if first is None or rev is None:
        return first
    return {**first, **dict(rev.get("quality") or {})}


def live_of(decision: Mapping[str, Any], revisions: Mapping[WindowKey, Mapping[str, Any]]) -> float:
    """The window's realized metric as last measured (NaN when none): the trend test's history."""
    quality = current_quality(decision, revisions) or {}
    live = quality.get("live")
    return float(live) if isinstance(live, (int, float)) and not isinstance(live, bool) else math.nan


def latest_verdicts(decisions: list[dict[str, Any]]) -> dict[WindowKey, dict[str, Any]]:
    """The newest ``monitor`` decision of each (version, window), oldest window first."""
    found: dict[WindowKey, dict[str, Any]] = {}
    for d in sorted(decisions, key=lambda d: d["id"]):
        if d.get("version") is not None and d.get("window_start") is not None and d.get("window_end") is not None:
            found[window_key(d)] = d
    return dict(sorted(found.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])))


def decay_missed(first_codes: list[str], quality: dict[str, Any], mon: Monitoring, *, version: str = "") -> str | None:
    """The decay rule (``checks.judge_decay``) on the revised quality: its reason when it holds and
    the first verdict (``first_codes``) had no ``quality_decay``, else None."""
    if "quality_decay" in first_codes:
        return None
    s = Summary("", version, "", "", "", rows=0, quality=quality)
    judge_decay(s, mon)
    return s.reasons[-1] if "quality_decay" in s.reason_codes else None


def revised_summary(
    summary: dict[str, Any], decision: Mapping[str, Any], revisions: Mapping[WindowKey, Mapping[str, Any]]
) -> dict[str, Any]:
    """A window's monitoring summary with its realized quality as last revised (the status page):
    ``quality["revised"]`` says what the verdict had and when it was revised."""
    rev = current_revision(decision, revisions)
    if rev is None:
        return summary
    first = dict(summary.get("quality") or {})
    revised_at = rev.get("revised_at")
    quality = {
        **first,
        **dict(rev.get("quality") or {}),
        "revised": {
            "first_live": first.get("live"),
            "first_labelled_rows": first.get("labelled_rows"),
            "revised_at": revised_at.isoformat() if isinstance(revised_at, datetime) else revised_at,
            "reason_code": rev.get("reason_code"),
            "decayed": bool(rev.get("decayed")),
        },
    }
    return {**summary, "quality": quality}


# -- the revision pass ---------------------------------------------------------------------------------
def revise_window_quality(
    rt: Runtime, *, windows: int | None = None, dag_id: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """Revise the realized quality of the recent judged windows whose labelled-row count changed
    (see the module); returns what was looked at and what was revised."""
    n = windows or max(REVISION_WINDOWS, rt.spec.monitoring.trend_windows)
    verdicts = latest_verdicts(rt.store.recent_window_decisions(rt.model_name, n))
    revisions = rt.store.latest_window_quality(rt.model_name)
    done: list[Revision] = []
    for key, decision in verdicts.items():
        before = current_quality(decision, revisions)
        if before is None:
            continue
        version, start, end = key
        start_from = end - timedelta(days=rt.spec.monitoring.quality_days)
        rows = rt.store.count_labelled(
            rt.model_name, version, event_from=start_from, event_to=end, routes=ROUTES, exclude_prefix=PROBE_PREFIX
        )
        if rows == before["labelled_rows"]:
            continue
        done.append(revise_one(rt, key, decision, before, dag_id=dag_id, run_id=run_id))
    for r in done:
        log.info("revised %s", r.line())
    log.info("late labels: %s of %s recent judged windows revised", len(done), len(verdicts))
    return {
        "windows": len(verdicts),
        "revised": [r.to_dict() for r in done],
        "decay_revised": [r.to_dict() for r in done if r.reason_code == DECAY_REVISED],
    }


def revise_one(
    rt: Runtime, key: WindowKey, decision: dict[str, Any], before: dict[str, Any], *, dag_id: str | None, run_id: str | None
) -> Revision:
    """Measure one window again on every label present and record the revision (and a decay the
    first verdict missed, once per window)."""
    version, start, end = key
    metric = str(before.get("metric") or rt.spec.promotion.metric)
    holdout = before.get("holdout")
    quality = json_safe(quality_of(labelled(rt, version, end), rt.spec, {metric: holdout} if holdout is not None else {}))
    given = decision.get("inputs")
    inputs: dict[str, Any] = given if isinstance(given, dict) else {}
    role = str(inputs.get("role") or "")
    reason = decay_missed(list(inputs.get("reason_codes") or []), quality, rt.spec.monitoring, version=version)
    first_time = reason is not None and not rt.store.decision_exists(
        rt.model_name, REVISION_KIND, version=version, window_start=start, window_end=end
    )
    code = DECAY_REVISED if first_time else None
    rt.store.record_window_quality(
        rt.model_name, key, decision_id=int(decision["id"]), quality=quality, decayed=reason is not None, reason_code=code,
        dag_id=dag_id, run_id=run_id,
    )  # fmt: skip
    revision = Revision(
        version, start.isoformat(), end.isoformat(), role, metric, int(before["labelled_rows"]), int(quality["labelled_rows"]),
        _number(before.get("live")), _number(quality.get("live")), code,
    )  # fmt: skip
    if first_time and reason is not None:
        report_decay(rt, revision, decision, reason, dag_id=dag_id, run_id=run_id)
    return revision


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def report_decay(rt: Runtime, r: Revision, decision: dict[str, Any], reason: str, *, dag_id: str | None, run_id: str | None) -> None:
    """A decay only the late labels showed: a ``quality_revision`` decision, and for the champion's
    window the version's critical ``performance_degraded`` alert."""
    from include.mlops.adapters.alerts import raise_alert

    why = f"{reason} (labels that arrived after the verdict; it had {r.labelled_rows_before} labelled rows)"
    rt.store.record_decision(
        rt.model_name,
        REVISION_KIND,
        "decay",
        DECAY_REVISED,
        subject=f"v{r.version} {r.window_start[:16]}..{r.window_end[:16]} (revised)",
        version=r.version,
        window_start=datetime.fromisoformat(r.window_start),
        window_end=datetime.fromisoformat(r.window_end),
        reasons=[why],
        inputs={"first_decision": decision["id"], "first_outcome": decision.get("outcome"), **json_safe(r.to_dict())},
        dag_id=dag_id,
        run_id=run_id,
    )
    if r.role == CHAMPION:
        payload = {"version": r.version, "window_start": r.window_start, "window_end": r.window_end, "reason_codes": [DECAY_REVISED]}
        raise_alert(rt.store, rt.model_name, severity="critical", kind="performance_degraded", dedupe_key=f"decay:v{r.version}",
                    message=f"v{r.version} decay found late on {r.window_start[:10]}: {why}", payload=payload)  # fmt: skip
