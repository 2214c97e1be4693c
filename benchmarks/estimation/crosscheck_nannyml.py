"""Cross-check of the project's CBPE (include/mlops/domain/performance_estimation.py) against NannyML.

Runs only where NannyML is installed, never in the project's venv (NannyML is not a dependency):

    python3 -m venv /tmp/nml && /tmp/nml/bin/pip install nannyml==0.13.1 scikit-learn pandas statsmodels
    NML_DISABLE_USAGE_LOGGING=1 PYTHONPATH=. /tmp/nml/bin/python benchmarks/estimation/crosscheck_nannyml.py

(NannyML 0.13.1 imports statsmodels without declaring it; ``NML_DISABLE_USAGE_LOGGING=1`` switches its
usage telemetry off, and the script sets it too before importing NannyML.)

Data: scikit-learn's ``make_classification`` (a fixed seed); a model is fitted on one part, scored on a
labelled reference and on analysis windows of the same size:

* ``iid``: windows drawn like the reference;
* ``shift``: covariate shift, rows drawn with a probability rising with the most important feature
  (P(y | x) unchanged, so CBPE's assumption holds while the window's AUC moves);
* two models: a logistic regression (scores close to calibrated) and a gradient boosting with its
  scores squashed (``score ** 3``: badly calibrated, so both implementations must calibrate).

Prints, per window, NannyML's and our estimate of ROC AUC, F1 and accuracy (threshold 0.5), both
sampling errors, and the realized value (the labels are known here); with ``--json PATH`` also writes
them. Exit status 1 when an estimate differs from NannyML's by more than ``--tolerance`` (0.005).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import pandas as pd

from include.mlops.domain import performance_estimation as pe

METRICS = ["roc_auc", "f1", "accuracy"]


def make_data(seed: int, window: int, windows: int) -> dict[str, dict[str, pd.DataFrame]]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    n_pool = 40_000 + 6 * window + 30 * window
    x, y = make_classification(
        n_samples=n_pool, n_features=8, n_informative=5, n_redundant=1, weights=[0.75], flip_y=0.08, class_sep=0.7, random_state=seed
    )
    rng = np.random.default_rng(seed)
    train, ref, pool = np.arange(40_000), np.arange(40_000, 40_000 + 6 * window), np.arange(40_000 + 6 * window, n_pool)
    models = {
        "logistic": (LogisticRegression(max_iter=1000).fit(x[train], y[train]), lambda s: s),
        "boosting_squashed": (
            HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(x[train], y[train]),
            lambda s: s**3,
        ),
    }
    key = int(np.argmax(np.abs(models["logistic"][0].coef_[0])))
    weights = 1 / (1 + np.exp(-2.5 * x[pool, key]))
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for name, (model, squash) in models.items():
        scores = squash(model.predict_proba(x)[:, 1])
        frames = {"reference": _frame(y[ref], scores[ref], "reference")}
        for kind in ("iid", "shift"):
            p = None if kind == "iid" else weights / weights.sum()
            for w in range(windows):
                idx = rng.choice(pool, size=window, replace=False, p=p)
                frames[f"{kind}-{w}"] = _frame(y[idx], scores[idx], f"{kind}-{w}")
        out[name] = frames
    return out


def _frame(y: np.ndarray, s: np.ndarray, label: str) -> pd.DataFrame:
    return pd.DataFrame({"y_true": y, "y_pred_proba": s, "y_pred": (s >= 0.5).astype(int), "window": label})


def nannyml_estimates(frames: dict[str, pd.DataFrame], window: int) -> dict[str, dict[str, tuple[float, float]]]:
    import nannyml as nml

    est = nml.CBPE(
        y_pred_proba="y_pred_proba",
        y_pred="y_pred",
        y_true="y_true",
        problem_type="classification_binary",
        metrics=METRICS,
        chunk_size=window,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(frames["reference"])
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for name, df in frames.items():
            if name == "reference":
                continue
            res = est.estimate(df.drop(columns=["y_true"])).filter(period="analysis").to_df()
            out[name] = {m: (float(res[(m, "value")].iloc[0]), float(res[(m, "sampling_error")].iloc[0])) for m in METRICS}
    out["_calibrated"] = {"needs_calibration": (float(est.needs_calibration), 0.0)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--window", type=int, default=5000, help="rows per analysis window (and per NannyML chunk)")
    parser.add_argument("--windows", type=int, default=3, help="windows per kind (iid, shift)")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import nannyml

    data = make_data(args.seed, args.window, args.windows)
    rows = []
    worst = 0.0
    print(f"NannyML {nannyml.__version__}; windows of {args.window} rows; threshold 0.5")
    for model, frames in data.items():
        nml_est = nannyml_estimates(frames, args.window)
        ref = frames["reference"]
        ours_ref = pe.fit_cbpe(ref["y_pred_proba"].to_numpy(), ref["y_true"].to_numpy())
        print(
            f"\n{model}: reference {len(ref)} rows, realized ROC AUC {ours_ref.realized['roc_auc']:.4f} "
            f"(CBPE on the reference itself {ours_ref.estimated_on_reference['roc_auc']:.4f}); "
            f"calibrated: NannyML {bool(nml_est['_calibrated']['needs_calibration'][0])}, ours {ours_ref.calibrated} "
            f"(held-out ECE {ours_ref.ece_raw:.4f} -> {ours_ref.ece_calibrated:.4f})"
        )
        print(f"{'window':10} {'metric':9} {'NannyML':>8} {'(se)':>7} {'ours':>8} {'(se)':>7} {'diff':>8} {'realized':>9}")
        for name, df in frames.items():
            if name == "reference":
                continue
            ours = pe.estimate_performance(ours_ref, df["y_pred_proba"].to_numpy())
            realized = pe.realized_metrics(df["y_true"].to_numpy(), df["y_pred_proba"].to_numpy())
            for m in METRICS:
                nv, nse = nml_est[name][m]
                e = ours.metrics[m]
                assert e.value is not None and e.sampling_error is not None
                diff = e.value - nv
                worst = max(worst, abs(diff))
                real = realized[m]
                print(
                    f"{name:10} {m:9} {nv:8.4f} {nse:7.4f} {e.value:8.4f} {e.sampling_error:7.4f} {diff:+8.4f} "
                    f"{real if real is not None else float('nan'):9.4f}"
                )
                rows.append(
                    {
                        "model": model,
                        "window": name,
                        "metric": m,
                        "nannyml": nv,
                        "nannyml_se": nse,
                        "ours": e.value,
                        "ours_se": e.sampling_error,
                        "realized": realized[m],
                    }
                )
    print(f"\nlargest |ours - NannyML|: {worst:.5f} (tolerance {args.tolerance})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"nannyml": nannyml.__version__, "rows": rows, "max_abs_diff": worst}, indent=1))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
