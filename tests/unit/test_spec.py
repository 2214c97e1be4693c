from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from include.mlops.domain.spec import SpecError, load_spec, parse_spec

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
FLIGHTS = ROOT / "include/specs/flights.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(FLIGHTS.read_text())


def feature(raw: dict, name: str) -> dict:
    return next(f for f in raw["features"] if f["name"] == name)


def test_flights_spec_loads(spec):
    assert spec.name == "flights_late_arrival"
    assert spec.entity_id == "flight_id" and spec.time_column == "sched_dep"
    assert spec.batch_columns[:2] == ["flight_id", "sched_dep"] and spec.batch_columns[-1] == "arr_delay"
    # no leaking column is a feature
    assert not {"dep_delay", "arr_time", "dep_time", "air_time", "arr_delay"} & set(spec.feature_names)
    assert spec.feature("temp").nullable and not spec.feature("carrier").nullable


def test_target_rule_derives_label(spec):
    import pandas as pd

    assert list(spec.target.derive(pd.Series([15.0, 15.5, -3.0, 200.0]))) == [False, True, False, True]


def _error(raw: dict) -> str:
    with pytest.raises(SpecError) as exc:
        parse_spec(raw, "test.yaml")
    return str(exc.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: feature(r, "temp").__setitem__("max", "hot"), "features[temp].max"),
        (lambda r: feature(r, "carrier").pop("categories"), "features[carrier]: a categorical feature needs"),
        (lambda r: feature(r, "distance").__setitem__("min", 9000), "min (9000.0) is greater than max (5100.0)"),
        (lambda r: r.pop("entity_id"), "entity_id: required field is missing"),
        (lambda r: r["features"].append(dict(r["features"][0])), "feature names must be unique; repeated: carrier"),
        (lambda r: feature(r, "temp").__setitem__("maximum", 3), "features[temp].maximum: Extra inputs are not permitted"),
        (lambda r: r["target"].__setitem__("op", "~"), "target.op"),
        (lambda r: r["checks"][0].__setitem__("b", "carrier"), "not a numeric feature"),
        (lambda r: feature(r, "carrier").__setitem__("max_null_fraction", 0.5), "max_null_fraction > 0 needs nullable: true"),
        (lambda r: r["batch"].__setitem__("min_rows", 0), "batch.min_rows"),
        (lambda r: r.__setitem__("time_column", "temp"), "cannot be both a feature"),
        (lambda r: r["source"].__setitem__("kind", "files"), "source kind 'files' needs a 'path'"),
        (lambda r: r["monitoring"].__setitem__("drift_exclude", ["moon"]), "drift_exclude name unknown features: moon"),
    ],
)
def test_invalid_spec_names_the_field(raw, mutate, expected):
    bad = copy.deepcopy(raw)
    mutate(bad)
    msg = _error(bad)
    assert expected in msg, msg
    assert "test.yaml is invalid" in msg


def test_invalid_value_is_shown(raw):
    feature(raw, "temp")["max"] = "hot"
    assert "(got 'hot')" in _error(raw)


def test_yaml_syntax_error_is_reported(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: x\nfeatures: [\n")
    with pytest.raises(SpecError, match="is not valid YAML"):
        load_spec(p)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_top_level_must_be_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_spec(p)
