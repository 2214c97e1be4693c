"""The offline gates a candidate must pass before it serves (their names: ``domain.policy.GATES``).

Each gate is recorded as a decision with its inputs and a reason code:

* ``loads``: the artifact loads and predicts in a clean Python process, as data only (skops with the
  loop's trust list, the sha256 recorded at registration: :mod:`include.mlops.adapters.model_artifacts`);
  a version that is not skops, ships code or does not match its digest fails with that reason code;
* ``signature``: its input signature has exactly the spec's features with compatible types (the
  serving API validates requests against the same spec);
* ``floors``: its holdout metrics clear the spec's absolute floors (:func:`floor_failures`);
* ``beats_champion``: on the candidate's own holdout, it beats the current champion by at least
  ``deployment.min_gain`` on the primary metric (both evaluated with ``mlflow.models.evaluate`` and
  compared by :func:`beats_champion`, MLflow's ``MetricThreshold`` rule as a pure function the
  backtest shares; the candidate's evaluation logs MLflow's plots, the champion's only its metrics).
  A candidate refitted on window + holdout (``training.refit_with_holdout``) has seen its holdout:
  it is judged by the validation fit's holdout scores that training recorded, and it is the refit
  that the early window, the promotion and the bake then judge on live traffic. The champion is
  compared only on the holdout rows it has not trained on (a refitted champion trained days before,
  e.g. on the same window, has seen them); with fewer than ``training.min_holdout_rows`` such rows
  the gate passes with ``champion_trained_on_holdout`` (the release compares them on live traffic),
  or refuses a candidate on an older window (``candidate_older_than_champion``,
  :mod:`include.mlops.steps.gates_refit`);
* ``probe``: on the spec's fixed probe set its scores (a classifier's probabilities, a regressor's
  predicted values: ``domain.tasks.scores``) are finite, in [0, 1] for a classifier, not constant,
  deterministic, and equal to the scores recorded at training time (serialization skew).

Metrics go the task's way (``domain.tasks``): a floor of an error metric (MAE, RMSE) is a ceiling,
and a candidate beats the champion on MAE by being lower. A regressor is evaluated with MLflow's
``regressor`` evaluator, whose metric names (``mean_absolute_error``...) map to the spec's
(``mae``...) through ``Metric.mlflow_name``.

``floors`` and ``beats_champion`` share one evaluation and run as one gate task (``evaluation``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from include.mlops.domain.policy import EVALUATION, gates_of_task
from include.mlops.domain.spec import Spec
from include.mlops.domain.tasks import metric_of

if TYPE_CHECKING:
    from include.mlops.runtime import Runtime
    from include.mlops.steps.deploy import Candidate

log = logging.getLogger(__name__)


@dataclass
class GateResult:
    gate: str
    passed: bool
    reason_code: str
    message: str
    inputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"{self.gate}: {'passed' if self.passed else 'FAILED'} ({self.message})"[:240]


#: Airflow keeps a mapped task's label in a VARCHAR(250) (``task_instance.rendered_map_index``):
#: PostgreSQL refuses a longer one, and the task fails with it.
MAP_LABEL_LIMIT = 240


def gates_label(results: list[GateResult], limit: int = MAP_LABEL_LIMIT) -> str:
    """The gate task's label in the Airflow grid, within Airflow's column size."""
    text = "; ".join(r.label for r in results)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- loads ----------------------------------------------------------------------------------------
#: Exit status of the load check when the loader refuses the version (its last stdout line says why).
REFUSED_EXIT = 3


def gate_loads(rt: Runtime, c: Candidate, timeout: float = 300.0) -> GateResult:
    """Load and score the probe set in a fresh interpreter (no state from this process)."""
    uri = f"models:/{c.model}/{c.version}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": rt.settings.mlflow_tracking_uri,
        "MLOPS_OPS_DB_URL": rt.settings.ops_db_url,
        # the clean process loads this model's spec as its default model; MLOPS_MODEL_NAME renames
        # only the deployment's default model
        "MLOPS_SPEC": str(rt.entry.spec_path if rt.entry else rt.settings.spec_path),
    }
    if rt.entry is not None and not rt.entry.default:
        env.pop("MLOPS_MODEL_NAME", None)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "include.mlops.steps.gates", "load-check", c.model, c.version],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(rt.settings.project_root),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return GateResult("loads", False, "artifact_load_timeout", f"loading {uri} took longer than {timeout:.0f}s", {"uri": uri})
    if out.returncode == REFUSED_EXIT:
        refusal = json.loads(out.stdout.strip().splitlines()[-1])
        return GateResult("loads", False, refusal["reason_code"], refusal["message"][:900], {"uri": uri, "refused": True})
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return GateResult("loads", False, "artifact_unloadable", f"{uri} does not load: {' | '.join(tail)}"[:900], {"uri": uri})
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return GateResult("loads", True, "loads", f"loaded and scored {info['rows']} rows in a clean process", {"uri": uri, **info})


def _load_check(name: str, version: str) -> int:
    """Entry point of the clean-process load check."""
    import time

    from include.mlops.adapters.model_artifacts import UntrustedModelError, load_model_version
    from include.mlops.adapters.store import Store
    from include.mlops.domain.profiles import probe_frame
    from include.mlops.domain.spec import load_spec
    from include.mlops.settings import get_settings

    settings = get_settings()
    spec = load_spec(settings.spec_path)
    started = time.perf_counter()
    try:
        model = load_model_version(Store.open(settings.ops_db_url), spec, name, version, tracking_uri=settings.mlflow_tracking_uri)
    except UntrustedModelError as exc:
        print(json.dumps({"reason_code": exc.reason_code, "message": str(exc)}))
        return REFUSED_EXIT
    from include.mlops.domain.tasks import scores as task_scores

    scores = task_scores(spec.task, model, probe_frame(spec)[spec.feature_names])
    print(json.dumps({"rows": len(scores), "seconds": round(time.perf_counter() - started, 3)}))
    return 0


# -- signature ------------------------------------------------------------------------------------
_TYPES = {"categorical": {"string"}, "numeric": {"double", "float", "long", "integer"}, "integer": {"long", "integer", "double", "float"}}


def gate_signature(spec: Spec, c: Candidate) -> GateResult:
    from mlflow.models import get_model_info

    sig = get_model_info(f"models:/{c.model}/{c.version}").signature
    if sig is None or sig.inputs is None:
        return GateResult("signature", False, "signature_missing", "the model was logged without an input signature")
    cols = {col.name: str(col.type).lower().split(".")[-1] for col in sig.inputs.inputs}
    expected = spec.feature_names
    missing = [n for n in expected if n not in cols]
    extra = [n for n in cols if n not in expected]
    wrong = [f"{f.name}: {cols[f.name]} (spec: {f.type})" for f in spec.features if f.name in cols and cols[f.name] not in _TYPES[f.type]]
    problems = []
    if missing:
        problems.append(f"missing inputs {missing}")
    if extra:
        problems.append(f"inputs the spec does not know {extra}")
    if wrong:
        problems.append(f"incompatible types {wrong}")
    if problems:
        return GateResult("signature", False, "signature_mismatch", "; ".join(problems), {"signature": cols})
    return GateResult(
        "signature", True, "signature_compatible", f"{len(cols)} inputs match the spec and the serving schema", {"signature": cols}
    )


# -- floors and beats_champion: one evaluation ----------------------------------------------------
def _eval_frame(rt: Runtime, c: Candidate) -> tuple[Any, Any]:
    """The candidate's holdout (features and target) and each row's event day (None without the time column)."""
    import mlflow
    import pandas as pd

    path = mlflow.artifacts.download_artifacts(run_id=c.mlflow_run_id, artifact_path="holdout/holdout.parquet")
    df = pd.read_parquet(path)
    time = rt.spec.time_column
    days = pd.to_datetime(df[time]).dt.date.to_numpy() if time in df.columns else None
    return df[[*rt.spec.feature_names, rt.spec.target.name]].reset_index(drop=True), days


def _evaluate(model: Any, data: Any, target: str, *, plots: bool = True, task: str = "binary_classification") -> Any:
    """``mlflow.models.evaluate`` of a model the loop loaded itself (a ``PyFuncModel`` from
    :func:`_verified_pyfunc`: MLflow is never handed a URI to deserialize); a ``regression``
    task's with MLflow's regressor evaluator (it draws no plots)."""
    import mlflow

    if task == "regression":
        return mlflow.models.evaluate(
            model=model,
            data=data,
            targets=target,
            model_type="regressor",
            evaluators="default",
            evaluator_config={"log_model_explainability": False, "log_metrics_with_dataset_info": False},
        )
    return mlflow.models.evaluate(
        model=model,
        data=data,
        targets=target,
        model_type="classifier",
        evaluators="default" if plots else _metrics_only_evaluator(),
        evaluator_config={"log_model_explainability": False, "pos_label": 1, "log_metrics_with_dataset_info": False},
    )


def spec_metrics(spec: Spec, mlflow_metrics: dict[str, Any], names: Any) -> dict[str, Any]:
    """The spec's metrics ``names`` read from an MLflow evaluation's metrics (by their MLflow name)."""
    from include.mlops.domain.tasks import metric

    return {str(k): mlflow_metrics.get(metric(spec.task, str(k)).mlflow_name) for k in names}


#: MLflow's built-in classifier evaluator without its five plots (ROC, precision-recall, lift,
#: calibration, confusion matrix: 60% of an evaluation's CPU). The champion's re-evaluation on a
#: candidate's holdout needs only its metrics; the candidate's own evaluation keeps every plot.
METRICS_ONLY = "mlops_classifier_metrics"


def _metrics_only_evaluator() -> str:
    """The name of that evaluator, registered once per process; ``default`` (plots included) if
    this MLflow's evaluator registry is not where it was (it is internal to MLflow)."""
    try:
        from mlflow.models.evaluation.evaluator_registry import _model_evaluation_registry as registry
        from mlflow.models.evaluation.evaluators.classifier import ClassifierEvaluator
    except ImportError:
        return "default"
    if not registry.is_registered(METRICS_ONLY):

        class MetricsOnlyClassifier(ClassifierEvaluator):
            name = METRICS_ONLY

            def _log_binary_classifier_artifacts(self) -> None:
                pass

            def _log_multiclass_classifier_artifacts(self) -> None:
                pass

            def _log_confusion_matrix(self) -> None:
                pass

        registry.register(METRICS_ONLY, MetricsOnlyClassifier)
    return METRICS_ONLY


def _verified_pyfunc(rt: Runtime, model: str, version: str) -> Any:
    from include.mlops.adapters.model_artifacts import load_model_version_pyfunc

    return load_model_version_pyfunc(rt.store, rt.spec, model, version, tracking_uri=rt.settings.mlflow_tracking_uri)


def gates_by_evaluation(rt: Runtime, c: Candidate, dag_run: str | None = None) -> list[GateResult]:
    """``floors`` and ``beats_champion``: evaluate candidate and champion on the candidate's holdout."""
    import mlflow

    from include.mlops.adapters.registry import quiet_model_imports
    from include.mlops.steps.gates_refit import (
        champion_seen_rows,
        recorded_scores,
        refitted,
        saw_holdout_gate,
        scores_evaluation,
        version_data_end,
    )

    quiet_model_imports()
    # both models first, through the loader: a refused one fails the gate with its reason code
    model = _verified_pyfunc(rt, c.model, c.version)
    champion = _verified_pyfunc(rt, c.model, c.champion) if c.champion is not None and c.champion != c.version else None
    data, days = _eval_frame(rt, c)
    mlflow.set_tracking_uri(rt.settings.mlflow_tracking_uri)
    mlflow.set_experiment(c.model)
    recorded = recorded_scores(c, len(data)) if refitted(rt, c) else None
    champion_end = version_data_end(rt, c.model, str(c.champion)) if champion is not None else None
    seen = champion_seen_rows(days, champion_end)
    with mlflow.start_run(
        run_name=f"gates v{c.version}", tags={"mlops.kind": "gates", "mlops.candidate": c.version, "mlops.dag_run_id": dag_run or ""}
    ):
        if recorded is not None:  # the registered model has seen the holdout: judge the validation fit's recorded scores
            with mlflow.start_run(run_name=f"evaluate v{c.version} (validation fit, before the refit)", nested=True):
                cand = scores_evaluation(rt.spec, data, recorded)
        else:
            with mlflow.start_run(run_name=f"evaluate v{c.version}", nested=True):
                cand = _evaluate(model, data, rt.spec.target.name, task=rt.spec.task)
        if seen is not None and seen.any():  # compare on the rows the champion has not trained on, both models alike
            keep = ~seen
            verdict = saw_holdout_gate(rt, c, int(keep.sum()), len(keep), champion_end)
            if verdict is not None:
                return [_gate_floors(rt.spec, cand), verdict]
            data = data[keep].reset_index(drop=True)
            with mlflow.start_run(run_name=f"evaluate v{c.version} on the rows champion v{c.champion} has not trained on", nested=True):
                if recorded is not None:
                    versus = scores_evaluation(rt.spec, data, recorded[keep])
                else:
                    versus = _evaluate(model, data, rt.spec.target.name, plots=False, task=rt.spec.task)
            return [_gate_floors(rt.spec, cand), _gate_beats_champion(rt.spec, c, data, versus, champion)]
        return [_gate_floors(rt.spec, cand), _gate_beats_champion(rt.spec, c, data, cand, champion)]


def passes(value: float, bar: float, *, greater_is_better: bool) -> bool:
    """MLflow's ``MetricThreshold`` rule: at least ``bar`` (at most, when lower is better)."""
    return value >= bar if greater_is_better else value <= bar


def floor_failures(floors: dict[str, float], observed: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The pure floors comparison (the ``floors`` gate and the backtest): the metrics that could not
    be computed, and a message per metric on the wrong side of its floor."""
    missing = [k for k, v in observed.items() if v is None or (isinstance(v, float) and math.isnan(v))]
    failed = [
        f"{k} {float(observed[k]):.4f} {'>' if _lower(k) else '<'} {'ceiling' if _lower(k) else 'floor'} {float(v)}"
        for k, v in floors.items()
        if k not in missing and not passes(float(observed[k]), float(v), greater_is_better=not _lower(k))
    ]
    return missing, failed


def _lower(metric: str) -> bool:
    """Is smaller better for ``metric`` (an error: log loss, Brier, MAE, RMSE)? (``domain.tasks``)"""
    return not metric_of(metric).higher_is_better


def beats_champion(metric: str, candidate: float, champion: float, min_gain: float) -> bool:
    """The pure ``beats_champion`` comparison (the gate and the backtest): the candidate's metric
    is at least the champion's plus ``min_gain`` (at most minus it when lower is better), as MLflow's
    ``MetricThreshold(min_absolute_change=...)``; with no gain, not worse than the champion."""
    greater = not _lower(metric)
    return passes(float(candidate), float(champion) + (min_gain if greater else -min_gain), greater_is_better=greater)


def _gate_floors(spec: Spec, cand: Any) -> GateResult:
    """The candidate's evaluation (``cand``) against the spec's absolute metric floors."""
    wanted: dict[str, float] = {str(k): float(v) for k, v in spec.deployment.floors.items()}
    observed: dict[str, Any] = spec_metrics(spec, cand.metrics, wanted)
    missing, failed = floor_failures(wanted, observed)
    if missing:
        return GateResult("floors", False, "metric_unavailable", f"metrics {missing} could not be computed", {"observed": observed})
    inputs = {"observed": observed, "floors": spec.deployment.floors}
    if failed:
        return GateResult("floors", False, "below_metric_floor", "; ".join(failed), inputs)
    msg = ", ".join(f"{k} {observed[k]:.4f} {'<=' if _lower(k) else '>='} {wanted[k]}" for k in wanted)
    return GateResult("floors", True, "floors_cleared", msg, inputs)


def _gate_beats_champion(spec: Spec, c: Candidate, data: Any, cand: Any, champion: Any) -> GateResult:
    """The champion (``champion``: its verified model) evaluated on the same holdout (a nested run of the gates' run), compared with
    the candidate's evaluation ``cand`` on the primary metric; passes when there is no champion."""
    import mlflow

    if c.champion is None or c.champion == c.version:
        return GateResult(
            "beats_champion", True, "no_champion", "no champion to compare with: this is the first model", {"champion": c.champion}
        )
    metric = spec.deployment.primary_metric
    with mlflow.start_run(run_name=f"evaluate champion v{c.champion} on v{c.version}'s holdout", nested=True):
        base = _evaluate(champion, data, spec.target.name, plots=False, task=spec.task)
    cv, bv = spec_metrics(spec, cand.metrics, [metric])[metric], spec_metrics(spec, base.metrics, [metric])[metric]
    inputs = {"metric": metric, "candidate": cv, "champion": bv, "champion_version": c.champion, "min_gain": spec.deployment.min_gain}
    gain = spec.deployment.min_gain
    if not beats_champion(metric, cv, bv, gain):
        return GateResult(
            "beats_champion",
            False,
            "does_not_beat_champion",
            f"{metric} {cv:.4f} vs champion v{c.champion} {bv:.4f} on the same holdout; needs a gain of at least {gain}"
            + (" (lower is better)" if _lower(metric) else ""),
            inputs,
        )
    return GateResult(
        "beats_champion", True, "beats_champion", f"{metric} {cv:.4f} vs champion v{c.champion} {bv:.4f} (min gain {gain})", inputs
    )


# -- probe ----------------------------------------------------------------------------------------
def gate_probe(rt: Runtime, c: Candidate) -> GateResult:
    import mlflow
    import numpy as np
    import pandas as pd

    from include.mlops.adapters.model_artifacts import load_model_version
    from include.mlops.domain.profiles import probe_frame
    from include.mlops.domain.tasks import scores as task_scores

    probes = probe_frame(rt.spec)
    model = load_model_version(rt.store, rt.spec, c.model, c.version, tracking_uri=rt.settings.mlflow_tracking_uri)
    first = task_scores(rt.spec.task, model, probes[rt.spec.feature_names])
    second = task_scores(rt.spec.task, model, probes[rt.spec.feature_names])
    inputs: dict[str, Any] = {
        "rows": len(first),
        "min": float(np.nanmin(first)),
        "max": float(np.nanmax(first)),
        "std": float(np.nanstd(first)),
    }
    if not np.all(np.isfinite(first)):
        return GateResult(
            "probe", False, "probe_not_finite", f"{int((~np.isfinite(first)).sum())} probe scores are NaN or infinite", inputs
        )
    if rt.spec.task == "binary_classification" and (first.min() < 0 or first.max() > 1):
        return GateResult("probe", False, "probe_out_of_range", "probe scores fall outside [0, 1]", inputs)
    if not np.array_equal(first, second):
        return GateResult("probe", False, "probe_not_deterministic", "two scorings of the same probe rows differ", inputs)
    if float(np.std(first)) < 1e-6:
        return GateResult("probe", False, "probe_constant", f"every probe row gets the same score {first[0]:.4f}", inputs)
    try:
        recorded = pd.read_parquet(
            mlflow.artifacts.download_artifacts(run_id=c.mlflow_run_id, artifact_path="reference/probe_scores.parquet")
        )
    except Exception as exc:  # an older or foreign version may not carry them
        inputs["recorded"] = f"unavailable: {type(exc).__name__}"
    else:
        diff = float(np.max(np.abs(recorded["score"].to_numpy() - first)))
        inputs["max_diff_vs_training"] = diff
        if diff > 1e-9:
            return GateResult(
                "probe", False, "probe_skew", f"scores differ from those recorded at training time by up to {diff:.3g}", inputs
            )
    return GateResult("probe", True, "probe_sane", f"{len(first)} probe scores finite, deterministic, spread {inputs['std']:.3f}", inputs)


# -- running and recording ------------------------------------------------------------------------
def run_gate(rt: Runtime, c: Candidate, gate: str, dag_run: str | None = None) -> list[GateResult]:
    """Run one gate task (one of ``domain.policy.GATE_TASKS``: ``evaluation`` judges ``floors`` and
    ``beats_champion`` together)."""
    from include.mlops.adapters.model_artifacts import UntrustedModelError

    try:
        if gate == "loads":
            return [gate_loads(rt, c)]
        if gate == "signature":
            return [gate_signature(rt.spec, c)]
        if gate == EVALUATION:
            return gates_by_evaluation(rt, c, dag_run)
        if gate == "probe":
            return [gate_probe(rt, c)]
    except UntrustedModelError as exc:  # refused by the loader: its reason code is the gate's
        log.warning("gate %s: %s", gate, exc)
        return [GateResult(n, False, exc.reason_code, str(exc)[:600]) for n in gates_of_task(gate)]
    except Exception as exc:  # a gate that cannot run is a gate that does not pass
        log.exception("gate %s errored", gate)
        return [GateResult(n, False, "gate_error", f"{type(exc).__name__}: {exc}"[:600]) for n in gates_of_task(gate)]
    raise ValueError(f"unknown gate {gate!r}")


def record_gates(rt: Runtime, c: Candidate, results: list[GateResult], dag_id: str | None, run_id: str | None) -> None:
    for r in results:
        rt.store.record_decision(
            rt.model_name,
            "gate",
            "passed" if r.passed else "failed",
            r.reason_code,
            subject=f"version {c.version} / {r.gate}",
            version=c.version,
            reasons=[r.message],
            inputs={"gate": r.gate, **r.inputs},
            dag_id=dag_id,
            run_id=run_id,
        )


# -- entry points of the deploy_validated_model DAG's gate tasks ---------------------------------
def check_gate(
    name: str, candidate: dict[str, Any], *, dag_id: str | None, run_id: str | None, model: str | None = None
) -> list[GateResult]:
    """Run one gate task on the candidate (``Candidate.to_dict()``) of ``model`` (``None``: the
    default model) and record its verdicts."""
    from include.mlops.runtime import load_runtime
    from include.mlops.steps.deploy import Candidate

    rt = load_runtime(model=model)
    c = Candidate(**candidate)
    results = run_gate(rt, c, name, run_id)
    record_gates(rt, c, results, dag_id, run_id)
    return results


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "load-check":
        return _load_check(args[1], args[2])
    print("usage: python -m include.mlops.steps.gates load-check <model> <version>", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
