"""The loop, replayed in event time through its own decision code.

Each day of traffic is answered by the serving aliases of the moment (the champion; a canary's
sticky share by ``domain.routing``, the serving API's split). At the end of each day, in order:

1. a release under way is judged (:mod:`.release`: early window, then promotion on the release's
   labelled rows, or rollback);
2. when a monitoring window closes (every ``monitoring.window_hours``, in whole days): monitoring's
   own checks on the versions that served it (``steps.monitoring``: ``serving_roles``,
   ``too_few_rows``, ``check_drift`` with the version's reference, ``quality_of`` / ``judge_decay``
   on the labels that have arrived, ``mark_healthy``, ``event_extra``), drift / decay alerts, then
   governance (``steps.governance.trigger_from`` / ``policy``, ``domain.policy.decide_retrain``) on
   each trigger; an accepted retrain trains on the spec's window (``plan_window`` on the days whose
   labels have arrived), runs the offline gates' comparisons (``steps.gates.floor_failures``,
   ``beats_champion`` on the candidate's holdout), and ``steps.deploy.plan`` decides the release.

Event time moves to the next day only when that work is done: the replay waits for the loop.
Not replayed (no servers here): latency, CPU, memory, errors and rejected requests (the early
window sees none), the artifact checks (``loads``, ``signature``, ``probe``: passed), the Great
Expectations suites, approval by a person (``require_approval`` counts as approved).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from include.mlops.domain.policy import LedgerRow, RetrainState, RetrainTrigger, decide_retrain
from include.mlops.domain.roles import CHALLENGER, CHAMPION
from include.mlops.domain.routing import bucket, goes_to_challenger
from include.mlops.steps.backtest.history import DAY, SCORE, History, day_start
from include.mlops.steps.backtest.models import Fitted, Trainer
from include.mlops.steps.backtest.release import judge_bake, judge_release
from include.mlops.steps.backtest.state import LoopState, Release
from include.mlops.steps.training_window import TrainingRefused

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from include.mlops.runtime import Runtime
    from include.mlops.steps.monitoring.checks import Summary

log = logging.getLogger(__name__)

#: The drift / decay alerts monitoring raises for the champion (``steps.monitoring.run``): one per incident.
ALERT_KEYS = {"drift": "drift", "decay": "decay"}


def spec_runtime(spec: Any) -> Runtime:
    """The steps' policy builders (``governance.policy``, ``release.window_policy``) read only
    ``rt.spec``: the backtest hands them the spec alone."""
    return cast("Runtime", SimpleNamespace(spec=spec, model_name=spec.name))


def window_days(spec: Any) -> int:
    """Monitoring windows in whole days (``window_hours`` rounded up to a day)."""
    from include.mlops.domain.policy import window_days as days

    return days(spec.monitoring.window_hours)


def monitoring_windows(start: date, last: date, days: int) -> list[tuple[date, date]]:
    """Consecutive complete windows of ``days`` days from ``start`` (inclusive bounds)."""
    out = []
    first = start
    while first + timedelta(days=days - 1) <= last:
        out.append((first, first + timedelta(days=days - 1)))
        first += timedelta(days=days)
    return out


class Loop:
    """One replay of the loop from ``start`` (the first served day) to the history's last day."""

    def __init__(self, history: History, trainer: Trainer, first: Fitted, start: date) -> None:
        import numpy as np

        self.h, self.trainer, self.spec, self.start = history, trainer, history.spec, start
        n = len(history.frame)
        self.st = LoopState(champion="", versions={}, served=np.zeros(n, dtype=np.int32), shadow=np.zeros(n, dtype=np.int32))
        self.st.champion = self.st.register(trainer.refit(first) if self.spec.training.refit_with_holdout else first)
        self.st.ledger.append(LedgerRow(CHAMPION, "deployed", None, self.st.champion))
        self.served_scores = np.full(n, np.nan)
        ids = history.frame[self.spec.entity_id].astype(str).to_numpy()
        self.buckets = np.fromiter((bucket(e, self.spec.name) for e in ids), dtype=np.float64, count=n)
        self.windows = {w[1]: w for w in monitoring_windows(start, history.last, window_days(self.spec))}
        self.rt = spec_runtime(self.spec)

    # -- the day loop -----------------------------------------------------------------------------
    def run(self) -> LoopState:
        day = self.start
        while day <= self.h.last:
            self.serve(day)
            now = day_start(day) + DAY
            if self.st.bake is not None:
                judge_bake(self, day, now)
            if self.st.release is not None:
                judge_release(self, day, now)
            if day in self.windows:
                self.close_window(self.windows[day], now)
            day += DAY
        return self.st

    def scores(self, version: str, lo: int, hi: int) -> np.ndarray:
        return self.trainer.scores(self.st.versions[version], lo, hi)

    def serve(self, day: date) -> None:
        """Answer the day's rows with the aliases of the moment."""
        lo, hi = self.h.span(day, day)
        if hi <= lo:
            return
        st = self.st
        self.st.served[lo:hi] = int(st.champion)
        self.served_scores[lo:hi] = self.scores(st.champion, lo, hi)
        if st.bake is not None:  # the previous champion scores every row in shadow
            st.shadow[lo:hi] = int(st.bake.previous)
        rel = st.release
        if rel is None or rel.mode == "direct":
            return
        if rel.mode == "shadow":
            st.shadow[lo:hi] = int(rel.version)
            return
        import numpy as np

        share = self.spec.deployment.canary_share
        canary = np.fromiter((goes_to_challenger(float(b), share) for b in self.buckets[lo:hi]), dtype=bool, count=hi - lo)
        idx = np.flatnonzero(canary)
        st.served[lo + idx] = int(rel.version)
        self.served_scores[lo + idx] = self.scores(rel.version, lo, hi)[idx]

    # -- monitoring -------------------------------------------------------------------------------
    def window_frame(self, lo: int, hi: int) -> pd.DataFrame:
        """The window as monitoring reads it from the inference log: version, route, status."""
        import numpy as np
        import pandas as pd

        served = self.st.served[lo:hi]
        route = np.where(served == int(self.st.champion), CHAMPION, CHALLENGER)
        return pd.DataFrame({"model_version": served.astype(str), "route": route, "status": "ok"})

    def version_rows(self, version: str, role: str, lo: int, hi: int) -> pd.DataFrame:
        """The rows ``version`` scored in ``lo..hi`` (as champion, or as challenger / in shadow), with its scores."""
        import numpy as np

        v = int(version)
        mine = self.st.served[lo:hi] == v
        if role != CHAMPION:
            mine |= self.st.shadow[lo:hi] == v
        idx = np.flatnonzero(mine)
        ok = self.h.frame.iloc[lo:hi].iloc[idx][self.spec.feature_names].copy()
        ok[SCORE] = self.scores(version, lo, hi)[idx]
        return ok

    def labelled(self, version: str, end: datetime, labels_by: datetime | None = None) -> pd.DataFrame:
        """``steps.monitoring.export.labelled`` in event time: the version's scored rows over the
        trailing ``quality_days`` before ``end`` whose labels have arrived by ``labels_by`` (default
        ``end``: a window's verdict; later: its revision by late labels, ``monitoring.revision``)."""
        import numpy as np
        import pandas as pd

        lo, hi = self.h.span((end - timedelta(days=self.spec.monitoring.quality_days)).date(), (end - DAY).date())
        v = int(version)
        mine = ((self.st.served[lo:hi] == v) | (self.st.shadow[lo:hi] == v)) & self.h.labels_usable(lo, hi, labels_by or end)
        idx = np.flatnonzero(mine)
        return pd.DataFrame({"score": self.scores(version, lo, hi)[idx], "label": self.h.labels[lo:hi][idx]})

    def judge(self, version: str, role: str, window: tuple[date, date], now: datetime) -> Summary:
        """``monitor_version``'s checks that exist in event time, for one version on one window."""
        from include.mlops.steps.monitoring.checks import (
            Summary,
            check_drift,
            check_estimated_quality,
            judge_decay,
            judge_trend,
            mark_healthy,
            quality_of,
            too_few_rows,
        )

        lo, hi = self.h.span(*window)
        ok = self.version_rows(version, role, lo, hi)
        s = Summary(self.spec.name, version, role, day_start(window[0]).isoformat(), now.isoformat(), rows=len(ok))
        if too_few_rows(s, self.spec.monitoring):
            return s
        ref = self.st.versions[version].reference
        check_drift(s, self.spec, ok, ref)
        s.quality = quality_of(self.labelled(version, now), self.spec, ref.metrics)
        judge_decay(s, self.spec.monitoring)
        judge_trend(s, self.quality_history(version, now), self.spec.monitoring)
        check_estimated_quality(s, self.spec, ok, ref)
        mark_healthy(s)
        return s

    def quality_history(self, version: str, now: datetime) -> list[float]:
        """The version's realized quality in its earlier windows (``checks.quality_history``), each
        measured again on the labels that have arrived by ``now``, as the live loop's revisions by
        late labels (``steps.monitoring.revision``) leave it."""
        import math

        from include.mlops.steps.monitoring.checks import quality_of

        if self.spec.monitoring.trend_windows == 0:
            return []
        ref = self.st.versions[version].reference
        out = []
        for d in self.st.decisions:
            if d["kind"] == "monitor" and d.get("version") == version:
                at = datetime.fromisoformat(d["at"])
                live = quality_of(self.labelled(version, at, now), self.spec, ref.metrics).get("live")
                out.append(float(live) if isinstance(live, (int, float)) else math.nan)
        return out

    def close_window(self, window: tuple[date, date], now: datetime) -> None:
        from include.mlops.steps.monitoring.run import serving_roles

        st = self.st
        lo, hi = self.h.span(*window)
        current = {CHAMPION: st.champion, **({CHALLENGER: st.challenger} if st.challenger else {})}
        summaries = [self.judge(v, role, window, now) for v, role in serving_roles(self.window_frame(lo, hi), current)]
        for s in summaries:
            st.record(now, "monitor", s.outcome, s.reason_codes[0] if s.reason_codes else "", version=s.version, role=s.role,
                      drift_share=s.drift.get("share"), drifted=s.drift.get("drifted"), quality=s.quality.get("live"),
                      estimated=(s.quality.get("estimated") or {}).get("value"))  # fmt: skip
        self.champion_alerts([s for s in summaries if s.role == CHAMPION])
        result = {"current": current, "summaries": [s.to_dict() for s in summaries]}
        for trigger, cause in self.triggers(result, now):
            self.govern(trigger, cause, now)

    def champion_alerts(self, summaries: list[Summary]) -> None:
        """Count the window and raise / resolve the champion's drift and decay alerts as monitoring
        does: one alert per incident (``drift:v<version>``), resolved by a healthy window."""
        st = self.st
        st.counts["windows"] += 1
        for outcome in ("drift", "decay"):
            if any(s.outcome == outcome for s in summaries):
                st.counts[f"windows_{outcome}"] += 1
        if any("dataset_drift" in s.reason_codes for s in summaries):
            st.counts["windows_dataset_drift"] += 1
        for s in summaries:
            if s.outcome in ALERT_KEYS:
                st.alert(f"{ALERT_KEYS[s.outcome]}:v{s.version}")
            if s.outcome == "healthy":
                st.resolve(f"drift:v{s.version}")
                st.resolve(f"decay:v{s.version}")

    # -- governance, training, gates, deployment ------------------------------------------------
    def trained_until(self) -> datetime:
        """End of the data the champion was trained and evaluated on (``governance``'s ``trained_until``)."""
        return day_start(self.st.versions[self.st.champion].window.holdout_end) + DAY

    def new_rows(self, now: datetime) -> int:
        """Labelled rows that arrived since the champion's training data ended (its holdout's end)."""
        lo, hi = self.h.span(self.trained_until().date(), (now - DAY).date())
        return int(self.h.labels_usable(lo, hi, now).sum())

    def triggers(self, result: dict[str, Any], now: datetime) -> list[tuple[RetrainTrigger, str]]:
        """The window's retrain triggers as ``retrain_on_drift`` gets them: decay and drift events
        (``event_extra``; a decay judged on its significance gets ``window_decay_test`` on the
        version's labelled rows, as ``governance.event_trigger`` does), then the freshness check of
        the closed window (``decide_freshness``)."""
        from include.mlops.domain.policy import DECAY, STALE, decide_freshness
        from include.mlops.steps.governance import trigger_from, window_decay_test
        from include.mlops.steps.monitoring.run import event_extra

        out = []
        for cause in (DECAY, "drift_detected"):
            extra = event_extra(result, cause)
            if extra is None:
                continue
            if cause == DECAY and self.spec.retraining.decay_evidence == "significant" and "decay_test" not in extra:
                version = str(extra.get("version"))
                rows = self.labelled(version, now)
                holdout = self.st.versions[version].reference.holdout
                test = window_decay_test(self.spec, rows["label"].to_numpy(), rows["score"].to_numpy(), holdout)
                extra = {**extra, "decay_test": test} if test else extra
            out.append((trigger_from(extra, cause), cause))
        max_age = self.spec.retraining.max_model_age_days
        if max_age is not None:
            fresh = decide_freshness(self.trained_until(), now, timedelta(days=max_age))
            if fresh.outcome == "stale":
                out.append((RetrainTrigger(cause=STALE, key=f"{STALE}:v{self.st.champion}", event_time=now), STALE))
        return out

    def govern(self, trigger: RetrainTrigger, cause: str, now: datetime) -> None:
        from include.mlops.steps.governance import policy

        st = self.st
        state = RetrainState(
            requests=list(st.requests), in_flight=False, new_rows=self.new_rows(now), pool_invalid=False, trained_until=self.trained_until()
        )
        verdict = decide_retrain(trigger, state, policy(self.rt))
        st.record(now, "governance", verdict, key=trigger.key)
        if verdict.outcome != "accepted":
            st.counts[f"governance_{verdict.reason_code}"] += 1
            return
        st.requests.append((trigger.event_time, trigger.key))
        st.counts["retrains"] += 1
        st.counts[f"retrains_{cause}"] += 1
        self.train_and_release(now, reason=cause)

    def train_and_release(self, now: datetime, *, reason: str) -> None:
        st = self.st
        try:
            fitted = self.trainer.fit(self.trainer.plan(self.h.labelled_days(now)))
        except TrainingRefused as exc:
            st.counts["trainings_refused"] += 1
            st.record(now, "training", "refused", exc.code, reasons=[exc.message])
            return
        version = st.register(fitted)
        st.record(now, "training", "registered", "candidate_trained", version=version, window=fitted.window.to_dict(), reason=reason)
        results = self.gates(version, fitted)
        from include.mlops.steps.deploy import Candidate, plan

        decision = plan(self.spec, Candidate(self.spec.name, version, "backtest", st.champion, st.challenger), results, None, None)
        st.record(now, "deployment", decision.action, ",".join(decision.failed) or (decision.strategy or ""), version=version,
                  gates={r["gate"]: r["passed"] for r in results})  # fmt: skip
        if decision.action != "deploy":
            st.counts["gates_failed" if decision.failed != ["challenger_busy"] else "challenger_busy"] += 1
            return
        st.counts["deployments"] += 1
        if self.spec.training.refit_with_holdout:
            st.versions[version] = self.trainer.refit(fitted)
        lo = self.h.span(now.date(), now.date())[0]
        st.release = Release(version, str(decision.strategy), now.date(), lo)
        if decision.strategy == "direct":
            st.ledger.append(LedgerRow(CHAMPION, "deployed", st.champion, version))
            st.champion = version

    def gates(self, version: str, fitted: Fitted) -> list[dict[str, Any]]:
        """The offline gates' verdicts: ``floors`` and ``beats_champion`` by the gates' own
        comparisons on the candidate's holdout; the artifact gates pass (nothing to load here)."""
        from include.mlops.domain.tasks import evaluate
        from include.mlops.steps.gates import beats_champion, floor_failures
        from include.mlops.steps.gates_refit import champion_seen_rows, data_end, saw_holdout

        dep, spec = self.spec.deployment, self.spec
        floors = {str(k): float(v) for k, v in dep.floors.items()}
        missing, failed = floor_failures(floors, {k: fitted.metrics.get(k) for k in floors})
        lo, hi = fitted.holdout_span
        metric = dep.primary_metric
        champ = self.st.versions[self.st.champion]
        refit = self.trainer.refits.get(champ.window) is champ
        champion_end = data_end(champ.window.to_dict(), refit=refit)
        seen = champion_seen_rows(self.h.row_days(lo, hi), champion_end)
        if seen is not None and seen.any():  # as the evaluation gate: only the rows the champion has not trained on
            unseen = int((~seen).sum())
            mine = data_end(fitted.window.to_dict(), refit=spec.training.refit_with_holdout)
            verdict = saw_holdout(
                self.st.champion, unseen, hi - lo, min_rows=spec.training.min_holdout_rows, candidate_end=mine, champion_end=champion_end
            )
            if verdict is not None:
                beats_gate = {"gate": "beats_champion", "passed": verdict[0], "reason_code": verdict[1], "unseen_rows": unseen}
                return self._gate_list(not (missing or failed), missing + failed, beats_gate)
            lo = hi - unseen  # the holdout's rows are in time order: the unseen ones are its last
        y = self.h.labels[lo:hi]
        if (lo, hi) == fitted.holdout_span:  # the whole holdout: the metric the fit recorded on it
            cand_value = fitted.metrics.get(metric)
        else:
            cand_value = evaluate(spec.task, y, self.trainer.scores(fitted, lo, hi)).get(metric)
        champ_value = evaluate(spec.task, y, self.scores(self.st.champion, lo, hi)).get(metric)
        beats = cand_value is not None and champ_value is not None and beats_champion(metric, cand_value, champ_value, dep.min_gain)
        beats_gate = {"gate": "beats_champion", "passed": beats, "candidate": cand_value, "champion": champ_value}
        return self._gate_list(not (missing or failed), missing + failed, beats_gate)

    @staticmethod
    def _gate_list(floors_passed: bool, failures: list[str], beats_gate: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"gate": "loads", "passed": True, "reason_code": "not_replayed"},
            {"gate": "signature", "passed": True, "reason_code": "not_replayed"},
            {"gate": "floors", "passed": floors_passed, "failures": failures},
            beats_gate,
            {"gate": "probe", "passed": True, "reason_code": "not_replayed"},
        ]
