"""The drift engine: verdicts on synthetic data, Evidently's choice of test, overrides, edge cases,
the window reader, and (integration tier) agreement with Evidently itself."""

from __future__ import annotations

import json
import logging
import re
from datetime import date

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from include.mlops.adapters.lake import read_inference
from include.mlops.domain import drift, drift_statistics
from include.mlops.domain.spec import Spec, SpecError, parse_spec

pytestmark = pytest.mark.unit

CATS = ["a", "b", "c", "d"]


def make_spec(numeric: tuple[str, ...] = ("x",), categorical: tuple[str, ...] = ("c",), **monitoring) -> Spec:
    features: list[dict] = [{"name": n, "type": "numeric", "nullable": True, "max_null_fraction": 1.0} for n in numeric]
    features += [{"name": n, "type": "categorical", "categories": CATS} for n in categorical]
    return parse_spec(
        {
            "name": "drift_test",
            "source": {"kind": "files", "path": "/nonexistent"},
            "entity_id": "id",
            "time_column": "ts",
            "target": {"name": "y", "source_column": "raw_y", "op": ">", "value": 0},
            "features": features,
            "monitoring": monitoring,
        }
    )


def frame(n: int, seed: int, *, mean: float = 0.0, cat_p: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(mean, 1.0, n), "c": rng.choice(np.asarray(CATS, dtype=object), n, p=list(cat_p))})


def run(ref: pd.DataFrame, cur: pd.DataFrame, spec: Spec | None = None, **kw) -> dict[str, drift.ColumnDrift]:
    spec = spec or make_spec()
    stats = json.loads(json.dumps(drift.reference_stats(ref, spec), allow_nan=False))  # stored as JSON, read back
    return {r.column: r for r in drift.column_drift(cur, stats, spec, **kw)}


# -- verdicts -------------------------------------------------------------------------------------
def test_unshifted_columns_are_not_flagged():
    out = run(frame(5000, 1), frame(5000, 2))
    assert {c: (r.method, r.drifted, r.status) for c, r in out.items()} == {
        "x": ("wasserstein", False, "ok"),
        "c": ("jensenshannon", False, "ok"),
    }
    assert out["x"].score is not None and out["x"].score < 0.05
    assert out["x"].threshold == 0.1 and out["x"].score_kind == "distance"
    assert out["x"].current_rows == 5000 and out["x"].reference_rows == 5000 and out["x"].null_share == 0.0


def test_shifted_columns_are_flagged():
    out = run(frame(5000, 1), frame(5000, 2, mean=0.5, cat_p=(0.1, 0.2, 0.3, 0.4)))
    assert out["x"].drifted and out["x"].score == pytest.approx(0.5, abs=0.05)  # normed Wasserstein of a 0.5 std shift
    assert out["c"].drifted and out["c"].score > 0.1
    assert drift.dataset_drift(list(out.values())).drifted


def test_scores_equal_scipy_on_an_exact_reference():
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": np.round(rng.normal(0, 1, 4000), 2), "c": rng.choice(CATS, 4000)})
    cur = pd.DataFrame({"x": np.round(rng.normal(0.2, 1.2, 3000), 2), "c": rng.choice(CATS[:3], 3000)})
    out = run(ref, cur)
    assert out["x"].exact
    assert out["x"].score == pytest.approx(wasserstein_distance(ref["x"], cur["x"]) / np.std(ref["x"]), rel=1e-9)
    p = ref["c"].value_counts(normalize=True).reindex(CATS, fill_value=0)
    q = cur["c"].value_counts(normalize=True).reindex(CATS, fill_value=0)
    assert out["c"].score == pytest.approx(jensenshannon(p, q), rel=1e-9)


def test_a_sketched_reference_stays_close_to_the_exact_score():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(4)
    ref = pd.DataFrame({"x": rng.lognormal(0, 0.8, 60_000), "c": "a"})
    stats = drift.reference_stats(ref, make_spec())
    assert not stats["columns"]["x"]["exact"] and len(stats["columns"]["x"]["values"]) <= drift_statistics.SKETCH_POINTS
    for shift in (0.0, 0.1, 0.3):
        cur = pd.DataFrame({"x": rng.lognormal(shift, 0.8, 50_000), "c": "a"})
        got = run(ref, cur)["x"]
        assert not got.exact
        assert got.score == pytest.approx(wasserstein_distance(ref["x"], cur["x"]) / np.std(ref["x"]), abs=0.003)


# -- the choice of test ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "reference_rows", "n_values", "expected"),
    [
        ("numeric", 1000, 6, "ks"),
        ("numeric", 1000, 5, "chisquare"),
        ("numeric", 1000, 3, "chisquare"),
        ("numeric", 1000, 2, "z"),
        ("numeric", 1000, 1, "z"),
        ("numeric", 1001, 6, "wasserstein"),
        ("numeric", 1001, 5, "jensenshannon"),
        ("categorical", 1000, 3, "chisquare"),
        ("categorical", 1000, 2, "z"),
        ("categorical", 1001, 2, "jensenshannon"),
        ("categorical", 10**6, 300, "jensenshannon"),
    ],
)
def test_method_choice_follows_evidentlys_rule(kind, reference_rows, n_values, expected):
    assert drift.choose_method(kind, reference_rows, n_values) == expected


@pytest.mark.parametrize(
    ("rows", "nulls", "method", "threshold", "score_kind"),
    [
        (1000, 0, "ks", 0.05, "p_value"),
        (1001, 0, "wasserstein", 0.1, "distance"),
        (1100, 100, "ks", 0.05, "p_value"),  # only non-null reference values count
    ],
)
def test_method_depends_on_the_reference_size(rows, nulls, method, threshold, score_kind):
    ref = frame(rows, 5)
    ref.loc[: nulls - 1, "x"] = np.nan
    got = run(ref, frame(2000, 6))["x"]
    assert (got.method, got.threshold, got.score_kind, got.reference_rows) == (method, threshold, score_kind, rows - nulls)
    assert got.reference_null_share == pytest.approx(nulls / rows)


def test_small_references_use_statistical_tests():
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.choice([0.0, 1.0, 2.0], 500), "c": rng.choice(["a", "b"], 500)})
    cur = pd.DataFrame({"x": rng.choice([0.0, 1.0, 2.0], 800, p=[0.1, 0.1, 0.8]), "c": rng.choice(["a", "b"], 800)})
    out = run(ref, cur)
    assert (out["x"].method, out["x"].drifted) == ("chisquare", True)
    assert (out["c"].method, out["c"].drifted) == ("z", False)
    few = run(pd.DataFrame({"x": np.tile([0.0, 1.0], 1000), "c": "a"}), pd.DataFrame({"x": np.tile([0.0, 1.0], 50), "c": "a"}))
    assert (few["x"].method, few["x"].drifted) == ("jensenshannon", False)  # <= 5 values, large reference


# -- overrides ------------------------------------------------------------------------------------
def test_a_threshold_override_keeps_the_default_method():
    ref, cur = frame(5000, 1), frame(5000, 2, mean=0.5)
    got = run(ref, cur, overrides={"x": {"threshold": 0.9}})["x"]
    assert (got.method, got.threshold, got.drifted, got.overridden) == ("wasserstein", 0.9, False, True)


def test_a_method_override_uses_that_method_and_its_default_threshold():
    ref, cur = frame(5000, 1), frame(5000, 2, mean=0.5, cat_p=(0.1, 0.2, 0.3, 0.4))
    out = run(ref, cur, overrides={"x": {"method": "psi"}, "c": {"method": "chisquare", "threshold": 0.01}})
    assert (out["x"].method, out["x"].threshold, out["x"].drifted) == ("psi", 0.1, True)
    assert (out["c"].method, out["c"].threshold, out["c"].score_kind, out["c"].drifted) == ("chisquare", 0.01, "p_value", True)
    ks = run(ref, cur, overrides={"x": {"method": "ks"}})["x"]
    assert ks.method == "ks" and ks.drifted and ks.score is not None and ks.score < 1e-10


def test_the_specs_overrides_are_used_as_typed():
    spec = make_spec(drift_overrides={"x": {"method": "psi", "threshold": 0.3}, "c": {"threshold": 0.01}})
    ref, cur = frame(5000, 1), frame(5000, 2, mean=0.5)
    out = run(ref, cur, spec, overrides=spec.monitoring.drift_overrides)
    assert (out["x"].method, out["x"].threshold, out["x"].overridden) == ("psi", 0.3, True)
    assert (out["c"].method, out["c"].threshold, out["c"].overridden) == ("jensenshannon", 0.01, True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x": {"method": "bogus"}}, "monitoring.drift_overrides.x.method: Input should be 'ks', 'chisquare'"),
        (
            {"c": {"method": "wasserstein"}},
            "monitoring.drift_overrides.c.method 'wasserstein' does not apply to a categorical feature "
            "(use one of chisquare, z, jensenshannon, psi, kl_div)",
        ),
        ({"x": {"method": "chisquare"}}, "monitoring.drift_overrides.x.method 'chisquare' does not apply to a numeric feature"),
        ({"x": {"threshold": -1}}, "monitoring.drift_overrides.x.threshold: Input should be greater than or equal to 0 (got -1)"),
        ({"x": {"threshold": "high"}}, "monitoring.drift_overrides.x.threshold: Input should be a valid number"),
        ({"x": {"threshold": float("inf")}}, "monitoring.drift_overrides.x.threshold: Input should be a finite number (got inf)"),
        ({"x": {"method": "ks", "limit": 1}}, "monitoring.drift_overrides.x.limit: Extra inputs are not permitted"),
        ({"x": 0.1}, "monitoring.drift_overrides.x: Input should be a valid dictionary"),
        ({"nope": {"threshold": 0.2}}, "drift_overrides / drift_exclude name unknown features: nope"),
    ],
)
def test_bad_overrides_are_refused_when_the_spec_loads(overrides, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        make_spec(drift_overrides=overrides)


def test_an_override_given_as_a_mapping_is_checked_by_the_spec_model():
    with pytest.raises(ValidationError, match="Input should be 'ks', 'chisquare'"):
        run(frame(2000, 1), frame(2000, 2), overrides={"x": {"method": "bogus"}})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        run(frame(2000, 1), frame(2000, 2), overrides={"x": {"limit": 1}})


def test_an_override_for_an_unmonitored_column_is_ignored_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="include.mlops.domain.drift"):
        out = run(frame(2000, 1), frame(2000, 2), overrides={"nope": {"threshold": 0.2}, "x": {"method": None, "threshold": None}})
    assert "nope" in caplog.text and set(out) == {"x", "c"}
    assert out["x"].method == "wasserstein" and out["x"].threshold == 0.1


# -- edge cases -----------------------------------------------------------------------------------
def test_empty_window_has_no_verdict():
    out = run(frame(2000, 1), frame(2000, 2).iloc[:0])
    assert {r.status for r in out.values()} == {"empty_window"}
    assert not any(r.drifted for r in out.values()) and all(r.score is None for r in out.values())
    ds = drift.dataset_drift(list(out.values()))
    assert (ds.drifted, ds.tested_columns, ds.undefined_names) == (False, 0, ["x", "c"])
    # a frame without even the columns is empty too
    assert {r.status for r in run(frame(2000, 1), pd.DataFrame()).values()} == {"empty_window"}


def test_a_column_entirely_null_in_the_window_is_reported_and_drifted():
    cur = frame(1000, 2)
    cur["x"] = np.nan
    cur["c"] = None
    out = run(frame(2000, 1), cur)
    for r in out.values():
        assert (r.status, r.method, r.drifted, r.score, r.null_share) == ("all_null", "all_null", True, None, 1.0)
        assert r.note
    inf = frame(1000, 2)
    inf["x"] = np.inf
    assert run(frame(2000, 1), inf)["x"].status == "all_null"


def test_a_column_missing_from_the_window_is_drifted():
    got = run(frame(2000, 1), frame(1000, 2).drop(columns=["x"]))["x"]
    assert (got.status, got.drifted, got.window_rows) == ("missing_column", True, 1000)


def test_a_reference_without_values_has_no_verdict():
    ref = frame(2000, 1)
    ref["x"] = np.nan
    out = run(ref, frame(1000, 2))
    assert (out["x"].status, out["x"].drifted) == ("no_reference", False)
    ds = drift.dataset_drift(list(out.values()))
    assert ds.tested_columns == 1 and ds.undefined_names == ["x"]


def test_categories_never_seen_in_training_are_listed_and_tested():
    cur = frame(3000, 2)
    cur.loc[:899, "c"] = "zz"
    cur.loc[900, "c"] = "yy"
    got = run(frame(3000, 1), cur)["c"]
    assert got.drifted and got.unseen_categories == ["zz", "yy"]
    assert got.unseen_share == pytest.approx(901 / 3000)
    few = frame(3000, 2)
    few.loc[0, "c"] = "zz"
    got = run(frame(3000, 1), few)["c"]
    assert got.unseen_categories == ["zz"] and not got.drifted


def test_constant_columns():
    const = pd.DataFrame({"x": np.full(3000, 5.0), "c": "a"})
    same = run(const, const.iloc[:1000])
    assert (same["x"].method, same["x"].score, same["x"].drifted) == ("jensenshannon", 0.0, False)
    assert (same["c"].method, same["c"].score, same["c"].drifted) == ("jensenshannon", 0.0, False)
    moved = run(const, pd.DataFrame({"x": np.full(1000, 6.0), "c": "b"}))
    assert moved["x"].drifted and moved["c"].drifted
    spread = run(const, frame(1000, 2))["x"]  # normed by Evidently's floor of 0.001 for a zero std
    assert spread.method == "wasserstein" and spread.drifted and spread.score is not None and np.isfinite(spread.score)
    small = run(const.iloc[:500], const.iloc[:300])
    assert (small["x"].method, small["x"].score, small["x"].drifted) == ("z", 1.0, False)


def test_nan_and_inf_are_dropped_and_reported():
    cur = frame(4000, 2)
    cur.loc[:399, "x"] = np.nan
    cur.loc[400:599, "x"] = np.inf
    cur.loc[600:699, "x"] = -np.inf
    got = run(frame(4000, 1), cur)["x"]
    assert (got.status, got.drifted, got.current_rows) == ("ok", False, 3300)
    assert got.null_share == pytest.approx(700 / 4000)


def test_odd_dtypes_in_the_window():
    ref = frame(3000, 1)
    cur = frame(3000, 2)
    cur["x"] = cur["x"].astype(object)
    cur.loc[:9, "x"] = "n/a"  # not a number: counted as null
    cur["c"] = cur["c"].astype("category")
    out = run(ref, cur)
    assert out["x"].status == "ok" and out["x"].null_share == pytest.approx(10 / 3000)
    plain = run(ref, frame(3000, 2))
    assert out["c"].score == pytest.approx(plain["c"].score)
    ints = pd.DataFrame({"x": pd.array(np.r_[np.arange(2999) % 7, [None]], dtype="Int64"), "c": "a"})
    got = run(pd.DataFrame({"x": np.arange(3000) % 7, "c": "a"}), ints)["x"]
    assert (got.method, got.drifted, got.current_rows) == ("wasserstein", False, 2999)


def test_reference_stats_are_json_and_include_the_score():
    spec = make_spec()
    ref = frame(3000, 1)
    stats = drift.reference_stats(ref, spec, score=np.linspace(0, 1, 700))
    text = json.dumps(stats, allow_nan=False)
    back = json.loads(text)
    assert back["format"] == drift.STATS_FORMAT and set(back["columns"]) == {"x", "c", "score"}
    assert back["columns"]["score"]["count"] == 700 and back["columns"]["c"]["counts"].keys() <= set(CATS)
    cur = frame(1000, 2).assign(score=np.linspace(0.2, 1, 1000))
    out = {r.column: r for r in drift.column_drift(cur, back, spec)}
    assert out["score"].drifted and out["score"].reference_rows == 700
    assert {r.column for r in drift.column_drift(frame(1000, 2), back, spec)} == {"x", "c"}  # no score in the window
    with pytest.raises(ValueError, match="lacks feature column"):
        drift.reference_stats(ref.drop(columns=["c"]), spec)
    results = json.dumps([r.to_dict() for r in out.values()], allow_nan=False)
    assert '"score"' in results


def test_unknown_stats_format_is_refused():
    with pytest.raises(ValueError, match="reference statistics format"):
        drift.column_drift(frame(10, 1), {"columns": {}}, make_spec())


def test_threads_do_not_change_the_result():
    ref, cur = frame(5000, 1, mean=0.1), frame(5000, 2)
    one = [r.to_dict() for r in drift.column_drift(cur, drift.reference_stats(ref, make_spec()), make_spec(), workers=1)]
    two = [r.to_dict() for r in drift.column_drift(cur, drift.reference_stats(ref, make_spec()), make_spec(), workers=3)]
    assert one == two


# -- dataset rule ---------------------------------------------------------------------------------
def _result(column: str, drifted: bool, status: drift.Status = "ok") -> drift.ColumnDrift:
    return drift.ColumnDrift(column, "numeric", "wasserstein", 0.0, 0.1, drifted, 10, 10, 0.0, status=status)


@pytest.mark.parametrize(
    ("flags", "share", "expected"),
    [
        ([True, True, False, False], 0.5, True),  # Evidently: share >= threshold
        ([True, False, False, False], 0.5, False),
        ([True, False, False, False], 0.25, True),
        ([], 0.5, False),
    ],
)
def test_dataset_drift_rule(flags, share, expected):
    ds = drift.dataset_drift([_result(f"c{i}", f) for i, f in enumerate(flags)], share=share)
    assert ds.drifted is expected and ds.drifted_columns == sum(flags) and ds.tested_columns == len(flags)


def test_undefined_columns_do_not_count_for_the_dataset():
    results = [_result("a", True), _result("b", False), _result("c", False, "no_reference"), _result("d", False, "empty_window")]
    ds = drift.dataset_drift(results)
    assert (ds.drifted, ds.share_drifted, ds.undefined_names) == (True, 0.5, ["c", "d"])


# -- reading the window ---------------------------------------------------------------------------
def _write(root, day: str, part: int, df: pd.DataFrame) -> None:
    folder = root / "inference" / "m" / f"day={day}"
    folder.mkdir(parents=True, exist_ok=True)
    df.to_parquet(folder / f"part-{part:05d}.parquet", index=False)


def test_read_inference_reads_the_days_asked_for(tmp_path):
    _write(tmp_path, "2013-02-01", 0, frame(100, 1))
    _write(tmp_path, "2013-02-02", 0, frame(200, 2))
    _write(tmp_path, "2013-02-02", 1, frame(50, 3).drop(columns=["x"]))  # an older part without x
    _write(tmp_path, "2013-02-03", 0, frame(400, 4))
    (tmp_path / "inference" / "m" / "day=2013-02-02" / "notes.txt").write_text("not a part")
    df = read_inference(tmp_path, "m", date(2013, 2, 2), "2013-02-03", columns=["x", "c", "absent"], categorical=["c"])
    assert len(df) == 650 and list(df.columns) == ["x", "c"]
    assert isinstance(df["c"].dtype, pd.CategoricalDtype) and df["x"].isna().sum() == 50
    out = {r.column: r for r in drift.column_drift(df, drift.reference_stats(frame(3000, 9), make_spec()), make_spec())}
    assert out["x"].null_share == pytest.approx(50 / 650) and not out["c"].drifted


def test_read_inference_without_parts_is_an_empty_window(tmp_path):
    df = read_inference(tmp_path, "m", "2013-02-01", "2013-02-07", columns=["x", "c"])
    assert len(df) == 0 and list(df.columns) == ["x", "c"]
    assert {r.status for r in drift.column_drift(df, drift.reference_stats(frame(100, 1), make_spec()), make_spec())} == {"empty_window"}


# -- against Evidently itself (integration tier: importing Evidently takes ~8 s of CPU) ------------
@pytest.fixture
def evidently_tier(request):
    """These tests live in this file but belong to the integration tier: they run when ``-m`` would
    select a test marked ``integration`` alone (``-m integration``, ``-m "not live"``, no ``-m``),
    and are skipped by ``-m unit``."""
    from _pytest.mark.expression import Expression

    expr = request.config.option.markexpr
    if expr and not Expression.compile(expr).evaluate(lambda name, **_: name == "integration"):
        pytest.skip("compares with Evidently (slow to import): runs in the integration tier")


@pytest.mark.integration
def test_method_choice_matches_evidentlys_source(evidently_tier):
    from evidently.legacy.calculations.stattests.registry import _get_default_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(0)
    for rows in (10, 999, 1000, 1001, 5000):
        for n_values in (1, 2, 3, 5, 6, 40):
            if n_values > rows:
                continue
            ref = pd.Series(rng.integers(0, n_values, rows).astype(float))
            ref.iloc[:n_values] = np.arange(n_values)  # every value present
            for kind, ctype in (("numeric", ColumnType.Numerical), ("categorical", ColumnType.Categorical)):
                theirs = _get_default_stattest(ref, ref.iloc[:5], ctype).name
                assert drift.choose_method(kind, rows, n_values) == theirs, (kind, rows, n_values)


@pytest.mark.integration
@pytest.mark.parametrize("method", ["ks", "wasserstein", "jensenshannon", "psi", "kl_div", "chisquare", "z"])
def test_override_scores_match_evidentlys_stattests(evidently_tier, method):
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(11)
    if method in ("chisquare", "z"):
        values = ["a", "b"] if method == "z" else CATS
        ref = pd.DataFrame({"x": 0.0, "c": rng.choice(values, 3000)})
        cur = pd.DataFrame({"x": 0.0, "c": rng.choice(values, 2000, p=None)})
        col, ctype = "c", ColumnType.Categorical
    else:
        ref = pd.DataFrame({"x": np.round(rng.normal(0, 1, 3000), 1), "c": "a"})
        cur = pd.DataFrame({"x": np.round(rng.normal(0.15, 1.1, 2000), 1), "c": "a"})
        col, ctype = "x", ColumnType.Numerical
    ours = run(ref, cur, overrides={col: {"method": method}})[col]
    theirs = get_registered_stattest(method, ctype)(ref[col], cur[col], ctype, None)
    assert ours.score == pytest.approx(theirs.drift_score, rel=1e-7, abs=1e-12)
    assert (ours.drifted, ours.threshold) == (theirs.drifted, theirs.actual_threshold)


@pytest.mark.integration
def test_verdicts_agree_with_evidentlys_data_drift_preset(evidently_tier):
    """20k rows, shifted and unshifted columns, nulls and an unseen category: the same verdicts."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset

    from include.mlops.steps.monitoring.reports import data_definition

    numeric = ("n_same", "n_shift", "n_scale", "n_int", "n_few", "n_mild", "n_nulls")
    categorical = ("c_same", "c_shift", "c_new")
    spec = make_spec(numeric, categorical)
    n = 20_000

    def window(seed: int, shifted: bool) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        k = 1.0 if shifted else 0.0
        df = pd.DataFrame(
            {
                "n_same": rng.normal(10, 3, n),
                "n_shift": rng.normal(10 + 1.5 * k, 3, n),
                "n_scale": rng.gamma(2.0, 2.0 * (1 + 0.5 * k), n),
                "n_int": rng.integers(0, 24, n),
                "n_few": rng.choice([0.0, 1.0, 2.0], n, p=[0.5, 0.3, 0.2] if not shifted else [0.3, 0.3, 0.4]),
                "n_mild": rng.normal(0.04 * k, 1, n),
                "n_nulls": np.where(rng.random(n) < 0.3, np.nan, rng.exponential(1, n)),
                "c_same": rng.choice(CATS, n),
                "c_shift": rng.choice(CATS, n, p=[0.4, 0.3, 0.2, 0.1] if not shifted else [0.1, 0.2, 0.3, 0.4]),
                "c_new": rng.choice(CATS + ["zz"], n, p=[0.25] * 4 + [0.0] if not shifted else [0.2] * 5),
            }
        )
        return df

    ref, cur = window(1, False), window(2, True)
    ours = run(ref, cur, spec)
    definition = data_definition(list(ref.columns), spec)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(cur, data_definition=definition), Dataset.from_pandas(ref, data_definition=definition)
    )
    d = snapshot.dict()
    scores = {m["config"]["column"]: m["value"] for m in d["metrics"] if m["config"]["type"].endswith("ValueDrift")}
    verdicts = {
        t["metric_config"]["params"]["column"]: t["status"] == "FAIL" for t in d["tests"] if "column" in t["metric_config"]["params"]
    }
    assert set(verdicts) == set(ours)
    assert {c: r.drifted for c, r in ours.items()} == verdicts
    assert {c for c, v in verdicts.items() if v} == {"n_shift", "n_scale", "n_few", "c_shift", "c_new"}
    for c, r in ours.items():
        assert r.score == pytest.approx(scores[c], abs=2e-3), c
