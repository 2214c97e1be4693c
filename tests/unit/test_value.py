"""The live loop's realized value (``steps.value``) on a synthetic ops store (SQLite, the real store
code) and lake: served vs first champion vs scheduled retraining per month, with known answers.
Loading a registry artifact is replaced by a fitted pipeline here; tests/integration/test_value.py
loads real ones from MLflow."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.mlops.adapters.lake import Lake
from include.mlops.adapters.store import Decision, Store
from include.mlops.domain.pipelines import build_pipeline
from include.mlops.domain.spec import Spec
from include.mlops.runtime import Runtime
from include.mlops.settings import get_settings
from include.mlops.steps.backtest.history import History
from include.mlops.steps.value import (
    MIN_ROWS,
    compute_value,
    first_champion,
    read_value,
    refresh_value,
    served_rows,
    value_path,
)
from tests.unit.test_backtest import tiny_history, tiny_spec

pytestmark = pytest.mark.unit

#: Traffic is served from this day of the synthetic history (days 0..27 train the first champion).
SERVE_FROM = 35


@pytest.fixture(scope="module")
def spec() -> Spec:
    return tiny_spec()


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return tiny_history(days=84, per_day=60)


@pytest.fixture(scope="module")
def first_model(spec: Spec, raw: pd.DataFrame) -> Any:
    """The first champion's model: the spec's pipeline fitted on the first four weeks."""
    h = History.of(spec, raw)
    lo, hi = h.span(h.first, h.first + timedelta(days=27))
    return build_pipeline(spec).fit(h.frame.iloc[lo:hi][spec.feature_names], h.labels[lo:hi])


def make_runtime(state: Path, spec: Spec, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    monkeypatch.setenv("MLOPS_HOME", str(state))
    store = Store.open(f"sqlite:///{state / 'ops.db'}")
    lake = Lake(state / "lake", spec.name)
    lake.ensure()
    return Runtime(get_settings(), spec, spec.name, store, lake)


def land(rt: Runtime, raw: pd.DataFrame) -> None:
    """Every day of ``raw`` accepted: the pool partition and the ground truth, through the store."""
    spec = rt.spec
    t = pd.to_datetime(raw[spec.time_column])
    for day, df in raw.groupby(t.dt.date):
        bid = rt.store.create_batch(rt.model_name, f"outcomes_{day}.csv", f"sha-{day}", None, None)
        out = df[spec.batch_columns].copy()
        out[spec.target.name] = spec.target.derive(out[spec.target.source_column]).astype("int8")
        path = rt.lake.pool_partition(str(day)) / f"batch-{bid:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        out.to_parquet(path, index=False)
        truth = [
            {"entity_id": str(e), "event_time": ts.to_pydatetime(), "label": int(y), "outcome": float(o)}
            for e, ts, y, o in zip(
                df[spec.entity_id], pd.to_datetime(df[spec.time_column]), out[spec.target.name], df[spec.target.source_column], strict=True
            )
        ]
        rt.store.accept_batch(bid, rt.model_name, day, str(path), truth, Decision(rt.model_name, "ingest", "accepted", "batch_valid"))


def serve(rt: Runtime, rows: pd.DataFrame, scores: np.ndarray, version: str, route: str = "champion", start_id: int = 0) -> None:
    spec = rt.spec
    records = [
        {
            "request_id": f"r{start_id + i}",
            "entity_id": str(r[spec.entity_id]),
            "model_name": rt.model_name,
            "model_version": version,
            "route": route,
            "event_time": pd.Timestamp(r[spec.time_column]).to_pydatetime(),
            "features": {f: (r[f] if isinstance(r[f], str) else float(r[f])) for f in spec.feature_names},
            "score": float(s),
            "prediction": int(s >= 0.5),
            "latency_ms": 1.0,
            "status": "ok",
            "created_at": datetime(2030, 1, 1),
        }
        for i, ((_, r), s) in enumerate(zip(rows.iterrows(), scores, strict=True))
    ]
    rt.store.append_inference(records)


def champion(rt: Runtime, version: str, n: int, frm: str | None = None) -> None:
    rt.store.append_ledger(
        model=rt.model_name, alias="champion", action="set", from_version=frm, to_version=version,
        strategy="direct", reason="test", actor="test", op_key=f"op-{n}", dag_id=None, run_id=None,
    )  # fmt: skip


def traffic(raw: pd.DataFrame, spec: Spec, first_day: int = SERVE_FROM) -> pd.DataFrame:
    t = pd.to_datetime(raw[spec.time_column])
    return raw[t >= t.min().normalize() + pd.Timedelta(days=first_day)].reset_index(drop=True)


@pytest.fixture
def loop(tmp_path: Path, spec: Spec, raw: pd.DataFrame, first_model: Any, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """A loop whose first champion v1 served every request from day 35 on."""
    rt = make_runtime(tmp_path / "home", spec, monkeypatch)
    land(rt, raw)
    champion(rt, "1", 1)
    rows = traffic(raw, spec)
    serve(rt, rows, first_model.predict_proba(rows[spec.feature_names])[:, 1], "1")
    return rt


def loader(models: dict[str, Any]) -> Any:
    return lambda rt, version: models[version]


def test_a_loop_that_served_its_first_champion_has_equal_columns_and_a_scheduled_counterfactual(loop, first_model, raw, spec):
    value = compute_value(loop, load=loader({"1": first_model}))
    rows = traffic(raw, spec)
    assert value.note is None and value.first_champion == "1" and value.rows == len(rows)
    assert [m.month for m in value.months] == sorted({f"{t:%Y-%m}" for t in pd.to_datetime(rows[spec.time_column])})
    assert sum(m.rows for m in value.months) == len(rows)
    for m in value.months:
        assert m.served == m.first_champion is not None  # the same model on the same rows
        assert m.scheduled is not None and 0.5 < m.scheduled <= 1.0
        assert m.scheduled_newest is not None and 0.5 < m.scheduled_newest <= 1.0
    assert value.overall["served"] == value.overall["first_champion"]
    assert value.overall["served"] == round(np.mean([m.served for m in value.months]), 4)
    # refits at the close of every 7th day from day 35 until the pool's last day (day 83): days 41, 48, ..., 76
    assert value.scheduled == {"every_days": 7, "retrains": 6, "retrains_newest": 6}
    assert value.served_versions == ["1"]
    assert "first (v1)" in value.table() and "every 7 d" in value.table() and "7 d newest" in value.table()
    assert compute_value(loop, load=loader({"1": first_model})) == value  # deterministic


def test_a_perfect_served_model_scores_one_and_the_counterfactuals_score_the_same_rows(tmp_path, spec, raw, first_model, monkeypatch):
    rt = make_runtime(tmp_path / "home", spec, monkeypatch)
    land(rt, raw)
    champion(rt, "1", 1)
    champion(rt, "2", 2, frm="1")
    rows = traffic(raw, spec)
    labels = spec.target.derive(rows[spec.target.source_column]).astype(int).to_numpy()
    half = int((pd.to_datetime(rows[spec.time_column]) < pd.Timestamp(2021, 3, 1)).sum())  # v2 serves March
    serve(rt, rows.iloc[:half], first_model.predict_proba(rows.iloc[:half][spec.feature_names])[:, 1], "1")
    serve(rt, rows.iloc[half:], labels[half:].astype(float), "2", start_id=half)  # v2 knows the answer
    serve(rt, rows.iloc[half:], np.zeros(len(rows) - half), "1", route="shadow", start_id=len(rows))  # never served
    value = compute_value(rt, scheduled=False, load=loader({"1": first_model}))
    assert value.first_champion == "1" and value.served_versions == ["1", "2"] and value.scheduled is None
    last = value.months[-1]
    assert last.served == 1.0 and last.first_champion is not None and last.first_champion < 1.0
    assert last.scheduled is None and value.overall["scheduled"] is None
    assert value.overall["served"] > value.overall["first_champion"]
    assert "every 7 d" not in value.table() and "7 d newest" not in value.table()


def test_an_entity_scored_twice_counts_once_as_first_served(loop, spec, raw):
    rows = traffic(raw, spec).head(3)
    serve(loop, rows, np.full(3, 0.123), "9", start_id=100_000)  # re-scored later by another version
    served = served_rows(loop)
    assert len(served) == len(traffic(raw, spec))
    assert "9" not in set(served["_version"])


def test_too_few_labelled_rows_are_said_not_compared(tmp_path, spec, raw, first_model, monkeypatch):
    rt = make_runtime(tmp_path / "home", spec, monkeypatch)
    land(rt, raw)
    value = compute_value(rt, load=loader({}))
    assert value.note == "no champion yet: nothing was served" and value.months == []
    champion(rt, "1", 1)
    rows = traffic(raw, spec).head(MIN_ROWS - 1)
    serve(rt, rows, first_model.predict_proba(rows[spec.feature_names])[:, 1], "1")
    value = compute_value(rt, load=loader({"1": first_model}))
    assert value.note is not None and "too few labelled served rows" in value.note and value.rows == MIN_ROWS - 1
    assert value.note in value.table()


def test_refresh_stores_the_value_and_recomputes_only_the_months_touched(loop, first_model):
    load = loader({"1": first_model})
    assert read_value(loop.lake) is None
    full = refresh_value(loop, load=load)
    assert read_value(loop.lake) == full and full.scheduled is None
    assert json.loads(value_path(loop.lake).read_text())["first_champion"] == "1"
    last = datetime.strptime(full.months[-1].month, "%Y-%m")
    assert refresh_value(loop, last + timedelta(days=3), load=load) == full  # the same rows: the same answer
    # a stored month before the one touched is kept as stored, not recomputed
    kept = replace(full, months=[replace(full.months[0], served=0.5), *full.months[1:]])
    value_path(loop.lake).write_text(json.dumps(kept.to_dict()))
    again = refresh_value(loop, last, load=load)
    assert again.months[0].served == 0.5 and again.months[-1] == full.months[-1]
    assert first_champion(loop) == "1"


def test_the_first_champion_is_the_first_version_ever_made_champion(loop):
    champion(loop, "4", 7, frm="1")
    champion(loop, "1", 8, frm="4")
    assert first_champion(loop) == "1"
    assert date(2021, 1, 1) <= served_rows(loop)["_t"].min().date()


def test_the_demo_ends_with_the_table_and_its_json_even_without_traffic(runtime, tmp_path, capsys):
    from tooling.demo import print_value

    print_value(runtime, tmp_path)
    out = capsys.readouterr().out
    assert "realized value of the loop" in out and "no champion yet: nothing was served" in out
    stored = json.loads((tmp_path / "value.json").read_text())
    assert stored["note"] == "no champion yet: nothing was served" and stored["rows"] == 0
    assert read_value(runtime.lake) is not None  # the status page's copy
