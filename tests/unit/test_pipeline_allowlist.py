"""A training run may name only an allowed pipeline factory (issue 17, item 8): the train_candidate
DAG's `pipeline` param and a retrain_requested event's extra used to let anyone who can trigger a
DAG import and call any `module:function` in a task."""

from __future__ import annotations

import sys

import pytest

from include.mlops.domain.pipelines import PipelineNotAllowed, allowed_pipelines, with_pipeline
from include.mlops.settings import get_settings

pytestmark = pytest.mark.unit

DRILL = "tooling.drills:fragile_pipeline"


def test_the_spec_pipeline_and_the_allow_list_are_allowed(spec):
    own = spec.training.pipeline
    assert allowed_pipelines(spec, [DRILL, own]) == [own, DRILL]
    assert with_pipeline(spec, DRILL, [DRILL]).training.pipeline == DRILL
    assert with_pipeline(spec, own, []).training.pipeline == own
    assert spec.training.pipeline == own  # the spec itself is not changed


@pytest.mark.parametrize(
    "name",
    ["os:system", "subprocess:getoutput", "tooling.drills:refuse_unknown_categories", "tooling.drills:fragile_pipeline ", "builtins:eval"],
)
def test_any_other_factory_is_refused_naming_the_allowed_ones(spec, name):
    with pytest.raises(PipelineNotAllowed) as info:
        with_pipeline(spec, name, [DRILL])
    message = str(info.value)
    assert "is not allowed" in message and spec.training.pipeline in message and DRILL in message
    assert info.value.allowed == [spec.training.pipeline, DRILL]


def test_an_empty_allow_list_leaves_only_the_spec_pipeline(spec):
    with pytest.raises(PipelineNotAllowed):
        with_pipeline(spec, DRILL, [])


def test_the_allow_list_setting():
    assert get_settings({}).training_pipelines == (DRILL,)  # the fire drill's pipeline (make demo)
    assert get_settings({"MLOPS_TRAINING_PIPELINES": "off"}).training_pipelines == ()
    assert get_settings({"MLOPS_TRAINING_PIPELINES": " a.b:c , d:e "}).training_pipelines == ("a.b:c", "d:e")
    with pytest.raises(ValueError, match="MLOPS_TRAINING_PIPELINES"):
        get_settings({"MLOPS_TRAINING_PIPELINES": "os:system('id')"})


def test_a_training_run_naming_another_factory_is_refused_before_it_is_imported(runtime, tmp_path, monkeypatch):
    """What the DAG task does with its params (an asset event's extra lands in the same params)."""
    from include.mlops.steps.training import run_training
    from include.mlops.steps.training_window import TrainingRefused

    (tmp_path / "evil_factory.py").write_text(
        "import sys\nsys.modules[__name__].IMPORTED = True\ndef make(spec, params):\n    raise SystemExit\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TrainingRefused) as info:
        run_training({"pipeline": "evil_factory:make", "reason": "drill"}, dag_id="train_candidate", run_id="manual__evil")
    assert info.value.code == "pipeline_not_allowed"
    assert "evil_factory" not in sys.modules
    assert DRILL in info.value.message and runtime.spec.training.pipeline in info.value.message
    (decision,) = runtime.store.list_decisions(runtime.model_name, "training")
    assert (decision["outcome"], decision["reason_code"]) == ("refused", "pipeline_not_allowed")
