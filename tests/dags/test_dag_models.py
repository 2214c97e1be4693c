"""One copy of every DAG per model (issue 18): with ``MLOPS_SPECS`` naming a folder of specs, the
DagBag holds the loop's seven DAGs for each model, the default model's under their plain ids and
every other model's as ``<model>.<step>``, each tagged and named after its model and wired to its
own assets, so one model's events never start another model's DAGs. A broken spec in the folder
leaves every other model's DAGs in place."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.dags
ROOT = Path(__file__).resolve().parents[2]
STEPS = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
DEFAULT, SECOND = "flights_late_arrival", "second_model"
#: the assets something outside Airflow announces (a producer's marker, the replay): no DAG emits them
EXTERNAL = {"label_batches_landed", "inference_window_closed"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A specs folder with the flights spec, a copy renamed ``second_model`` and two broken specs;
    the DagBag parsed with ``MLOPS_SPECS`` pointing at it."""
    from airflow.dag_processing.dagbag import DagBag

    home = tmp_path_factory.mktemp("models")
    specs = home / "specs"
    specs.mkdir()
    flights = (ROOT / "include/specs/flights.yaml").read_text()
    shutil.copy(ROOT / "include/specs/flights.yaml", specs / "flights.yaml")
    (specs / "second.yaml").write_text(flights.replace(f"name: {DEFAULT}", f"name: {SECOND}", 1))
    (specs / "broken.yaml").write_text("name: broken_model\ntask: regression\n")  # valid YAML, not a spec
    (specs / "garbled.yml").write_text("name: [unclosed\n")  # not YAML at all
    lake = home / "lake"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_SPECS", str(specs))
        mp.setenv("MLOPS_LAKE", str(lake))
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        yield SimpleNamespace(bag=bag, lake=lake, specs=specs)


def _assets(condition: Any) -> list[Any]:
    """The assets of a schedule's condition (an asset, or any/all of them, nested)."""
    if condition is None:
        return []
    if hasattr(condition, "uri"):
        return [condition]
    return [a for o in getattr(condition, "objects", ()) for a in _assets(o)]


def _consumed(dag: Any) -> list[Any]:
    return _assets(getattr(dag.timetable, "asset_condition", None))


def _produced(dag: Any) -> list[Any]:
    return [o for t in dag.tasks for o in t.outlets]


def _notifier(task: Any, attribute: str, kind: type) -> Any:
    """The one notifier of ``kind`` a task's callback attribute holds (one callable or a list)."""
    value = getattr(task, attribute)
    (notifier,) = [cb for cb in (value if isinstance(value, list | tuple) else [value]) if isinstance(cb, kind)]
    return notifier


def _model(dag: Any) -> str:
    (tag,) = [t for t in dag.tags if t.startswith("model:")]
    return str(tag.removeprefix("model:"))


def test_the_spec_name_is_what_the_test_expects():
    from include.mlops.domain.spec import load_spec

    assert load_spec(ROOT / "include/specs/flights.yaml").name == DEFAULT


def test_seven_dags_per_model_and_broken_specs_take_nothing_down(deployment):
    bag = deployment.bag
    assert bag.import_errors == {}, bag.import_errors
    assert len(STEPS) == 7
    assert sorted(bag.dags) == sorted([*STEPS, *(f"{SECOND}.{s}" for s in STEPS)])


def test_a_broken_spec_is_reported_by_the_catalog(deployment, monkeypatch):
    from include.mlops.catalog import load_catalog
    from include.mlops.settings import get_settings

    monkeypatch.setenv("MLOPS_SPECS", str(deployment.specs))
    catalog = load_catalog(get_settings())
    assert catalog.names == [DEFAULT, SECOND]
    assert sorted(Path(p).name for p in catalog.errors) == ["broken.yaml", "garbled.yml"]


@pytest.mark.parametrize("step", STEPS)
def test_ids_tags_display_names_and_docs_name_the_model(deployment, step):
    bag = deployment.bag
    for dag_id, model in ((step, DEFAULT), (f"{SECOND}.{step}", SECOND)):
        dag = bag.dags[dag_id]
        assert Path(dag.fileloc).stem == step
        assert "mlops-loop" in dag.tags and f"model:{model}" in dag.tags
        assert _model(dag) == model
        assert dag.dag_display_name == f"{step} · {model}"
        assert dag.doc_md.startswith(f"### {dag_id}\n") and f"**Model `{model}`**" in dag.doc_md
    # the step's own tags (data / model / monitoring / deployment) are the same for every model
    assert set(bag.dags[step].tags) - {f"model:{DEFAULT}"} == set(bag.dags[f"{SECOND}.{step}"].tags) - {f"model:{SECOND}"}


def test_each_model_has_its_own_assets(deployment):
    bag = deployment.bag
    by_model: dict[str, dict[str, set[str]]] = {}
    for dag in bag.dags.values():
        seen = by_model.setdefault(_model(dag), {"names": set(), "uris": set(), "consumed": set(), "produced": set()})
        for asset in [*_consumed(dag), *_produced(dag)]:
            seen["names"].add(asset.name)
            seen["uris"].add(asset.uri)
        seen["consumed"] |= {a.name for a in _consumed(dag)}
        seen["produced"] |= {a.name for a in _produced(dag)}
    default, second = by_model[DEFAULT], by_model[SECOND]
    assert not default["names"] & second["names"]
    assert not default["uris"] & second["uris"]
    # the default model's names and URIs are the single-model deployment's, unchanged
    assert "model_deployed" in default["names"] and "mlops://loop/model_deployed" in default["uris"]
    assert f"file://{deployment.lake / 'landing'}" in default["uris"]
    # every other model's are prefixed, and its landing watcher watches its own folder
    assert all(n.startswith(f"{SECOND}.") for n in second["names"])
    assert all(u.startswith(f"mlops://loop/{SECOND}/") for u in second["uris"] if not u.startswith("file://"))
    assert f"file://{deployment.lake / 'landings' / SECOND}" in second["uris"]
    # each model's loop is closed on its own: what a DAG waits for, a DAG of the same model emits
    for model, prefix in ((DEFAULT, ""), (SECOND, f"{SECOND}.")):
        seen = by_model[model]
        assert seen["consumed"] - seen["produced"] == {prefix + a for a in EXTERNAL}, model


def test_landing_watchers_watch_each_models_folder(deployment):
    for dag_id, folder in (("ingest_outcomes", "landing"), (f"{SECOND}.ingest_outcomes", f"landings/{SECOND}")):
        (landed,) = _consumed(deployment.bag.dags[dag_id])
        (watcher,) = landed.watchers
        assert Path(watcher.trigger.directory) == deployment.lake / folder


def test_every_task_acts_on_its_own_model(deployment):
    """The task bodies hand their DAG's model to load_runtime and the steps (the ``model`` they
    close over), and the notifiers file alerts under it. The default model's is ``None``: the
    default model as named when the task runs (MLOPS_MODEL_NAME may rename it after the parse)."""
    from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier

    closing_over_model = 0
    for dag_id, dag in deployment.bag.dags.items():
        model = None if _model(dag) == DEFAULT else _model(dag)
        for task in dag.tasks:
            for attribute, kind in (("on_failure_callback", LoopFailureNotifier), ("on_success_callback", LoopRecoveryNotifier)):
                assert _notifier(task, attribute, kind).model == model, f"{dag_id}.{task.task_id}"
            func = getattr(task, "python_callable", None)
            if func is None:
                continue
            nonlocals = inspect.getclosurevars(func).nonlocals
            if "model" in nonlocals:
                assert nonlocals["model"] == model, f"{dag_id}.{task.task_id}"
                closing_over_model += 1
    assert closing_over_model >= 2 * 15


@pytest.mark.parametrize("path", sorted((ROOT / "dags").glob("*.py")), ids=lambda p: p.stem)
def test_no_dag_file_loads_a_runtime_without_its_model(path):
    """``load_runtime()`` alone is the default model's: a DAG file always passes its own (``None``
    for the default model)."""
    text = path.read_text()
    assert "load_runtime()" not in text
    assert "get_settings().spec_path" not in text


def test_a_failed_task_of_another_model_files_its_alert_under_that_model(deployment, state):
    from include.mlops.adapters.notifiers import LoopFailureNotifier
    from include.mlops.adapters.store import Store
    from include.mlops.settings import get_settings

    dag = deployment.bag.dags[f"{SECOND}.train_candidate"]
    fail = _notifier(dag.get_task("train"), "on_failure_callback", LoopFailureNotifier)
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id="train", run_id="manual__1", map_index=-1, try_number=1, max_tries=0)
    fail({"dag": dag, "ti": ti, "task_instance": ti, "run_id": "manual__1", "exception": RuntimeError("boom")})
    store = Store.open(get_settings().ops_db_url)
    (alert,) = [a for a in store.list_alerts(SECOND) if a["kind"] == "task_failed"]
    assert alert["dedupe_key"] == f"task_failed:{SECOND}.train_candidate.train"
    assert [a for a in store.list_alerts(DEFAULT) if a["kind"] == "task_failed"] == []


def test_the_default_models_alert_follows_the_model_name_at_run_time(deployment, state, monkeypatch):
    """The DAGs were parsed under the spec's name; a task failing under MLOPS_MODEL_NAME files its
    alert under that name, as load_runtime names the default model then."""
    from include.mlops.adapters.notifiers import LoopFailureNotifier
    from include.mlops.adapters.store import Store
    from include.mlops.settings import get_settings

    monkeypatch.setenv("MLOPS_MODEL_NAME", "renamed_model")
    dag = deployment.bag.dags["train_candidate"]
    fail = _notifier(dag.get_task("train"), "on_failure_callback", LoopFailureNotifier)
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id="train", run_id="manual__2", map_index=-1, try_number=1, max_tries=0)
    fail({"dag": dag, "ti": ti, "task_instance": ti, "run_id": "manual__2", "exception": RuntimeError("boom")})
    store = Store.open(get_settings().ops_db_url)
    assert [a["dedupe_key"] for a in store.list_alerts("renamed_model")] == ["task_failed:train_candidate.train"]
