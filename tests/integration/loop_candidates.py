"""Candidates trained once per test module by the loop's own training (``steps.training.train_candidate``:
holdout, reference statistics, probe scores, skops artifact, signature), then registered under each
test's model name as the loop registers them (sha256 recorded in the test's ops store), so the
deploy DAG's gates run on them as on any candidate."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from tests.conftest import ops_db_url
from tests.integration.conftest import fill_pool

#: a deliberately poor model: logistic regression on distance alone (``tests.helpers.weak_pipeline``)
WEAK = {"pipeline": "tests.helpers:weak_pipeline", "skops_trusted_types": []}
#: floors every candidate trained here clears (the flights spec's 0.58 is above the weak model)
LOW_FLOORS = {"floors": {"roc_auc": 0.53}}


def train_module_candidates(mlflow_server, flights, tmp_path_factory, name: str, windows: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Train one candidate per entry of ``windows`` (label -> (train_start, train_end, changes to the
    spec's ``training`` or None)) under the model ``name``; returns label -> {source, run_id, window, metrics}."""
    from include.mlops.adapters.registry import mlflow_client
    from include.mlops.runtime import load_runtime
    from include.mlops.steps.training import train_candidate

    home = tmp_path_factory.mktemp(name)
    out: dict[str, dict[str, Any]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLOPS_OPS_DB_URL", ops_db_url(home))
        mp.setenv("MLOPS_LAKE", str(home / "lake"))
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
        mp.setenv("MLOPS_MODEL_NAME", name)
        rt = load_runtime()
        last = max(end for _, end, _ in windows.values())
        fill_pool(rt, flights, min(start for start, _, _ in windows.values()), date.fromordinal(last.toordinal() + 7))
        for label, (start, end, training) in windows.items():
            spec = rt.spec if training is None else rt.spec.model_copy(update={"training": rt.spec.training.model_copy(update=training)})
            summary = train_candidate(replace(rt, spec=spec), train_start=start, train_end=end, run_id=f"{name}-{label}")
            mv = mlflow_client(mlflow_server["url"]).get_model_version(name, summary["version"])
            out[label] = {"source": mv.source, "run_id": mv.run_id, "window": mv.tags.get("mlops.window"), "metrics": summary["metrics"]}
    return out


def register(client, model_name: str, trained: dict[str, dict[str, Any]], *labels: str) -> list[str]:
    """New versions of ``model_name`` pointing at the module's trained candidates (their training run
    kept: holdout and probe scores), each with its sha256 and window tag as the loop's training records them."""
    import mlflow

    from include.mlops.adapters.model_artifacts import record_model_digest
    from include.mlops.domain.pipelines import trusted_types
    from include.mlops.runtime import load_runtime

    rt = load_runtime()
    versions = []
    for label in labels:
        t = trained[label]
        v = str(mlflow.register_model(t["source"], model_name).version)
        assert client.get_model_version(model_name, v).run_id == t["run_id"]
        record_model_digest(rt.store, client, model_name, v, trusted_types(rt.spec), recorded_by="tests")
        client.set_model_version_tag(model_name, v, "mlops.status", "candidate")
        if t.get("window"):
            client.set_model_version_tag(model_name, v, "mlops.window", t["window"])
        versions.append(v)
    return versions
