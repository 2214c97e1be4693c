"""The deployment's models: the default model from MLOPS_SPEC, every other spec of MLOPS_SPECS."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from include.mlops.catalog import load_catalog
from include.mlops.domain.spec import SpecError
from include.mlops.runtime import load_runtime
from include.mlops.settings import PROJECT_ROOT, get_settings

pytestmark = pytest.mark.unit

FLIGHTS = PROJECT_ROOT / "include" / "specs" / "flights.yaml"


def _spec(folder: Path, file: str, **changes: object) -> Path:
    raw = yaml.safe_load(FLIGHTS.read_text())
    raw.update(changes)
    path = folder / file
    path.write_text(yaml.safe_dump(raw))
    return path


def _settings(tmp_path: Path, specs: Path | str, spec: Path = FLIGHTS):
    return get_settings({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_SPEC": str(spec), "MLOPS_SPECS": str(specs)})


def test_the_default_model_first_then_every_other_spec_by_name(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    _spec(folder, "flights.yaml")  # the default model's own file in the folder: not a second model
    _spec(folder, "b.yaml", name="zeta_model")
    _spec(folder, "a.yml", name="alpha_model")
    (folder / "notes.txt").write_text("not a spec")
    catalog = load_catalog(_settings(tmp_path, folder))
    assert catalog.names == ["flights_late_arrival", "alpha_model", "zeta_model"]
    default, alpha = catalog.default, catalog.get("alpha_model")
    assert default.default and default.prefix == "" and default.dag_id("monitor_model") == "monitor_model"
    assert alpha.prefix == "alpha_model." and alpha.dag_id("monitor_model") == "alpha_model.monitor_model"
    assert alpha.route == "/models/alpha_model/predict"
    lake = tmp_path / "lake"
    assert default.landing(lake) == lake / "landing" and alpha.landing(lake) == lake / "landings" / "alpha_model"
    with pytest.raises(KeyError, match="no model 'nope'.*alpha_model"):
        catalog.get("nope")


def test_a_broken_or_duplicate_spec_is_left_out_with_its_reason(tmp_path):
    folder = tmp_path / "specs"
    folder.mkdir()
    _spec(folder, "good.yaml", name="good_model")
    _spec(folder, "twin.yaml", name="good_model")
    (folder / "broken.yaml").write_text("name: broken\nfeatures: []\n")
    catalog = load_catalog(_settings(tmp_path, folder))
    assert catalog.names == ["flights_late_arrival", "good_model"]
    assert set(catalog.errors) == {str(folder / "broken.yaml"), str(folder / "twin.yaml")}
    assert "already taken" in catalog.errors[str(folder / "twin.yaml")]
    assert "invalid" in catalog.errors[str(folder / "broken.yaml")]


def test_a_broken_default_spec_still_raises(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(SpecError):
        load_catalog(_settings(tmp_path, "off", spec=bad))


def test_off_runs_the_default_model_only_and_a_runtime_is_per_model(tmp_path):
    assert load_catalog(_settings(tmp_path, "off")).names == ["flights_late_arrival"]
    folder = tmp_path / "specs"
    folder.mkdir()
    _spec(folder, "second.yaml", name="second_model")
    settings = _settings(tmp_path, folder)
    rt = load_runtime(settings, "second_model")
    assert rt.model_name == "second_model" and rt.spec.name == "second_model" and rt.entry is not None
    assert rt.lake.landing == settings.lake / "landings" / "second_model" and rt.lake.landing.is_dir()
    assert rt.lake.pool == settings.lake / "pool" / "second_model"
    assert load_runtime(settings).lake.landing == settings.lake / "landing"


def test_a_regression_spec_has_no_target_rule_and_regression_metrics(tmp_path):
    raw = yaml.safe_load(FLIGHTS.read_text())
    raw.update(name="delay_minutes_model", task="regression")
    raw["target"] = {"name": "delay_minutes", "source_column": "arr_delay", "source_min": -120, "source_max": 1500}
    raw["deployment"] = {**raw["deployment"], "primary_metric": "mae", "floors": {"r2": 0.0}}
    raw["promotion"] = {**raw["promotion"], "metric": "mae"}
    from include.mlops.domain.spec import parse_spec

    spec = parse_spec(raw)
    assert spec.task == "regression" and spec.target.derive(12.5) == 12.5
    raw["deployment"]["primary_metric"] = "roc_auc"
    with pytest.raises(SpecError, match="roc_auc is not a regression metric"):
        parse_spec(raw)
    raw["deployment"]["primary_metric"] = "mae"
    raw["target"]["op"], raw["target"]["value"] = ">", 15
    with pytest.raises(SpecError, match="regression model predicts the raw outcome"):
        parse_spec(raw)
