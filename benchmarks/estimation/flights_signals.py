"""The signals on the 2013 flights: how often drift fires under today's rule and under calibrated
thresholds, and how close CBPE's label-free estimate comes to the realized ROC AUC.

    PYTHONPATH=. .venv/bin/python benchmarks/estimation/flights_signals.py            # about 3 minutes on 2 cores
    PYTHONPATH=. .venv/bin/python benchmarks/estimation/flights_signals.py --json benchmarks/results/signals.json

In process, no Airflow, no servers: the spec's pipeline and the library's own drift and estimation
functions on the flights table (``tooling.flights.load_flights``, label ``arr_delay > 15``).

1. **Frozen January model** (the demo's first model): the spec's pipeline fitted on January, its
   holdout Feb 1-7. Weekly windows (7 days from Feb 8 to the end of December), each judged against
   January as the monitoring pass does (``drift.column_drift`` + ``dataset_drift``, share 0.5, the
   spec's ``drift_exclude``) and against January's calibrated thresholds (``drift_calibration``,
   weekly chunks of January). CBPE fitted on the holdout; per month, the estimated and realized
   ROC AUC, and per week whether CBPE flags a drop (``degraded``, k = 3) and whether the realized
   AUC has decayed (``significance.decay_test`` against the holdout rows, max drop 0).
2. **Fresh reference** (what a loop that retrains weekly sees): each weekly window against the
   56 days that end 7 days before it (the spec's training window + holdout), today's rule vs the
   calibrated one (8 weekly chunks). No model is needed for input drift.
3. **Monthly retrained model** (with ``--retrain``): for each month, the pipeline fitted on the
   56 days before the 7-day holdout that precedes the month; CBPE fitted on that holdout; estimated
   vs realized ROC AUC of the month.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pandas as pd

from include.mlops.domain import drift, drift_calibration, resampling, significance
from include.mlops.domain import performance_estimation as pe
from include.mlops.domain.pipelines import build_pipeline
from include.mlops.domain.spec import Spec, load_spec

ROOT = Path(__file__).resolve().parents[2]
DAY = pd.Timedelta(days=1)


def load(cache: Path, spec: Spec) -> pd.DataFrame:
    from tooling.flights import load_flights

    df = load_flights(cache)
    df[spec.target.name] = spec.target.derive(df[spec.target.source_column]).astype(int)
    return df.sort_values(spec.time_column, kind="stable").reset_index(drop=True)


def between(df: pd.DataFrame, spec: Spec, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    t = df[spec.time_column]
    return df[(t >= start) & (t < end)]


def fit(spec: Spec, rows: pd.DataFrame) -> Any:
    pipe = build_pipeline(spec)
    pipe.fit(rows[spec.feature_names], rows[spec.target.name].to_numpy())
    return pipe


def score(pipe: Any, spec: Spec, rows: pd.DataFrame) -> np.ndarray:
    return pipe.predict_proba(rows[spec.feature_names])[:, 1]


def judge_window(
    window: pd.DataFrame, stats: dict[str, Any], spec: Spec, cal: drift_calibration.DriftCalibration, columns: list[str]
) -> dict[str, Any]:
    share = spec.monitoring.dataset_drift_share
    today = drift.column_drift(window, stats, spec, columns=columns, workers=1)
    ds_today = drift.dataset_drift(today, share=share)
    judged = drift_calibration.calibrated_drift(window, stats, spec, cal, columns=columns, workers=1)
    ds_cal = drift_calibration.calibrated_dataset_drift(judged, share=share)
    return {
        "rows": len(window),
        "today_share": ds_today.share_drifted,
        "today_drift": ds_today.drifted,
        "today_features": ds_today.drifted_names,
        "calibrated_share": ds_cal.share_drifted,
        "calibrated_drift": ds_cal.drifted,
        "calibrated_features": ds_cal.drifted_names,
        "z": {j.column: (round(j.z_score, 1) if j.z_score is not None and np.isfinite(j.z_score) else j.z_score) for j in judged},
    }


def weekly_windows(first: pd.Timestamp, last: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    out, start = [], first
    while start + 7 * DAY <= last:
        out.append((start, start + 7 * DAY))
        start += 7 * DAY
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    return {
        "windows": n,
        "today_drift_windows": sum(r["today_drift"] for r in rows),
        "today_share_min": min(r["today_share"] for r in rows),
        "today_share_max": max(r["today_share"] for r in rows),
        "today_any_feature_windows": sum(bool(r["today_features"]) for r in rows),
        "calibrated_drift_windows": sum(r["calibrated_drift"] for r in rows),
        "calibrated_share_min": min(r["calibrated_share"] for r in rows),
        "calibrated_share_max": max(r["calibrated_share"] for r in rows),
        "calibrated_any_feature_windows": sum(bool(r["calibrated_features"]) for r in rows),
        "calibrated_feature_counts": pd.Series([f for r in rows for f in r["calibrated_features"]]).value_counts().to_dict(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "include/specs/flights.yaml")
    parser.add_argument("--cache", type=Path, default=ROOT / ".local/cache")
    parser.add_argument("--k", type=float, default=3.0, help="calibrated threshold: mean + k * std of the chunk statistics")
    parser.add_argument("--retrain", action="store_true", help="also fit a model per month and compare CBPE with the realized AUC")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    began = time.monotonic()

    spec = load_spec(args.spec)
    df = load(args.cache, spec)
    tcol, target = spec.time_column, spec.target.name
    columns = [f for f in spec.feature_names if f not in spec.monitoring.drift_exclude]
    rule = drift_calibration.ThresholdRule(k=args.k)
    jan0, feb1, feb8 = pd.Timestamp("2013-01-01"), pd.Timestamp("2013-02-01"), pd.Timestamp("2013-02-08")
    end = pd.Timestamp("2014-01-01")
    weeks = weekly_windows(feb8, end)
    result: dict[str, Any] = {"spec": spec.name, "k": args.k, "dataset_drift_share": spec.monitoring.dataset_drift_share}

    # 1. the frozen January model
    jan, holdout = between(df, spec, jan0, feb1), between(df, spec, feb1, feb8)
    model = fit(spec, jan)
    hold_scores = score(model, spec, holdout)
    stats = drift.reference_stats(jan[spec.feature_names], spec, score=hold_scores)
    cal = drift_calibration.calibrate(jan, spec, stats=stats, period="7D", time_column=tcol, rule=rule, columns=columns)
    cbpe = pe.fit_cbpe(hold_scores, holdout[target].to_numpy())
    hold_sample = significance.Sample(holdout[target].to_numpy(), hold_scores)
    print(
        f"January model: {len(jan)} training rows, holdout Feb 1-7 {len(holdout)} rows, ROC AUC {cbpe.realized['roc_auc']:.4f} "
        f"(CBPE on the holdout itself {cbpe.estimated_on_reference['roc_auc']:.4f}); isotonic calibration: {cbpe.calibrated} "
        f"(held-out ECE {cbpe.ece_raw:.4f} -> {cbpe.ece_calibrated:.4f}); drift calibrated on {len(cal.chunk_rows)} weekly chunks "
        f"of January ({cal.dropped_chunks} dropped)"
    )
    print("calibrated thresholds (Jan):", {c: round(t.threshold, 3) for c, t in cal.features.items()})
    frozen_weeks = []
    for start, stop in weeks:
        window = between(df, spec, start, stop)
        row = {"start": str(start.date()), **judge_window(window, stats, spec, cal, columns)}
        s = score(model, spec, window)
        est = pe.estimate_performance(cbpe, s)
        realized = resampling.roc_auc(window[target].to_numpy(), s)
        decay = significance.decay_test(window[target].to_numpy(), s, hold_sample, n_boot=500, seed=1)
        auc = est.metrics["roc_auc"]
        row.update(
            cbpe_auc=auc.value,
            cbpe_se=auc.sampling_error,
            cbpe_degraded=auc.degraded,
            realized_auc=realized,
            realized_decayed=decay.decayed,
        )
        frozen_weeks.append(row)
    frozen = summary(frozen_weeks)
    frozen["cbpe_degraded_windows"] = sum(r["cbpe_degraded"] for r in frozen_weeks)
    frozen["realized_decayed_windows"] = sum(r["realized_decayed"] for r in frozen_weeks)
    frozen["both_windows"] = sum(r["cbpe_degraded"] and r["realized_decayed"] for r in frozen_weeks)
    monthly: list[dict[str, Any]] = []
    for month in range(2, 13):
        rows = df[df[tcol].dt.month == month]
        s = score(model, spec, rows)
        est = pe.estimate_performance(cbpe, s)
        monthly.append(
            {
                "month": month,
                "rows": len(rows),
                "cbpe_auc": est.metrics["roc_auc"].value,
                "cbpe_se": est.metrics["roc_auc"].sampling_error,
                "realized_auc": resampling.roc_auc(rows[target].to_numpy(), s),
                "expected_positive_rate": est.expected_positive_rate,
                "positive_rate": float(rows[target].mean()),
            }
        )
    result["frozen"] = {"summary": frozen, "weeks": frozen_weeks, "months": monthly}
    print(f"\n1. frozen January model, {frozen['windows']} weekly windows Feb 8 - Dec 26")
    print(
        f"   today's rule:   dataset drift in {frozen['today_drift_windows']}/{frozen['windows']} windows "
        f"(share {frozen['today_share_min']:.2f}-{frozen['today_share_max']:.2f}); any feature in {frozen['today_any_feature_windows']}"
    )
    print(
        f"   calibrated k={args.k:g}: dataset drift in {frozen['calibrated_drift_windows']}/{frozen['windows']} windows "
        f"(share {frozen['calibrated_share_min']:.2f}-{frozen['calibrated_share_max']:.2f}); any feature in "
        f"{frozen['calibrated_any_feature_windows']}; features: {frozen['calibrated_feature_counts']}"
    )
    print(
        f"   CBPE degraded (k=3) in {frozen['cbpe_degraded_windows']} windows; realized decay (bootstrap vs holdout) in "
        f"{frozen['realized_decayed_windows']}; both in {frozen['both_windows']}"
    )
    print("   month  rows   CBPE AUC (se)     realized  diff    exp.pos  pos")
    for m in monthly:
        print(
            f"   {m['month']:>5} {m['rows']:>6} {m['cbpe_auc']:.4f} ({m['cbpe_se']:.4f})  {m['realized_auc']:.4f}  "
            f"{m['cbpe_auc'] - m['realized_auc']:+.4f}  {m['expected_positive_rate']:.3f}    {m['positive_rate']:.3f}"
        )
    diffs = np.array([m["cbpe_auc"] - m["realized_auc"] for m in monthly])
    print(
        f"   mean realized AUC Feb-Dec {np.mean([m['realized_auc'] for m in monthly]):.4f}; "
        f"mean |CBPE - realized| {np.abs(diffs).mean():.4f}, max {np.abs(diffs).max():.4f}"
    )

    # 2. a fresh 56-day reference for every window
    fresh_weeks = []
    for start, stop in weeks:
        ref_end = start - 7 * DAY
        reference = between(df, spec, ref_end - 56 * DAY, ref_end)
        if reference.empty or reference[tcol].min() > ref_end - 49 * DAY:
            continue  # fewer than 8 weeks of history
        ref_stats = drift.reference_stats(reference[spec.feature_names], spec)
        ref_cal = drift_calibration.calibrate(reference, spec, stats=ref_stats, period="7D", time_column=tcol, rule=rule, columns=columns)
        window = between(df, spec, start, stop)
        fresh_weeks.append({"start": str(start.date()), **judge_window(window, ref_stats, spec, ref_cal, columns)})
    fresh = summary(fresh_weeks)
    result["fresh"] = {"summary": fresh, "weeks": fresh_weeks}
    print(f"\n2. fresh reference (the 56 days ending 7 days before each window), {fresh['windows']} weekly windows")
    print(
        f"   today's rule:   dataset drift in {fresh['today_drift_windows']}/{fresh['windows']} windows "
        f"(share {fresh['today_share_min']:.2f}-{fresh['today_share_max']:.2f}); any feature in {fresh['today_any_feature_windows']}"
    )
    print(
        f"   calibrated k={args.k:g}: dataset drift in {fresh['calibrated_drift_windows']}/{fresh['windows']} windows "
        f"(share {fresh['calibrated_share_min']:.2f}-{fresh['calibrated_share_max']:.2f}); any feature in "
        f"{fresh['calibrated_any_feature_windows']}; features: {fresh['calibrated_feature_counts']}"
    )

    # 3. a model retrained for each month
    if args.retrain:
        retrained: list[dict[str, Any]] = []
        for month in range(3, 13):
            month_start = pd.Timestamp(2013, month, 1)
            hold_start = month_start - 7 * DAY
            train = between(df, spec, hold_start - 56 * DAY, hold_start)
            hold = between(df, spec, hold_start, month_start)
            pipe = fit(spec, train)
            hs = score(pipe, spec, hold)
            ref = pe.fit_cbpe(hs, hold[target].to_numpy())
            rows = df[df[tcol].dt.month == month]
            s = score(pipe, spec, rows)
            month_est = pe.estimate_performance(ref, s).metrics["roc_auc"]
            retrained.append(
                {
                    "month": month,
                    "holdout_auc": ref.realized["roc_auc"],
                    "cbpe_auc": month_est.value,
                    "cbpe_se": month_est.sampling_error,
                    "realized_auc": resampling.roc_auc(rows[target].to_numpy(), s),
                }
            )
        result["retrained"] = retrained
        print("\n3. monthly retrained model (56 days + 7-day holdout before the month)")
        print("   month  holdout  CBPE AUC (se)     realized  diff")
        for m in retrained:
            print(
                f"   {m['month']:>5} {m['holdout_auc']:.4f}  {m['cbpe_auc']:.4f} ({m['cbpe_se']:.4f})  {m['realized_auc']:.4f}  "
                f"{m['cbpe_auc'] - m['realized_auc']:+.4f}"
            )
        d = np.array([m["cbpe_auc"] - m["realized_auc"] for m in retrained])
        h = np.array([m["holdout_auc"] - m["realized_auc"] for m in retrained])
        print(f"   mean |CBPE - realized| {np.abs(d).mean():.4f}; mean |holdout AUC - realized| {np.abs(h).mean():.4f}")

    result["seconds"] = round(time.monotonic() - began, 1)
    print(f"\n{result['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
