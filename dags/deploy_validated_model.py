"""
### deploy_validated_model

Moves a candidate into production only through the offline gates, each recorded as a decision:
**loads** (in a clean process), **signature** (spec + serving schema), **floors** (absolute
metric floors), **beats_champion** (same holdout, MLflow validation thresholds), **probe** (fixed
probe set: sane, deterministic, same as at training). Each gate's verdict is the label of its
mapped task.

* Passed: optional **human approval** (Airflow HITL, when the spec or the `require_approval`
  param asks), then **deploy** as `canary` (challenger alias, a sticky share of traffic),
  `shadow` (challenger scores, champion answers) or `direct` (champion at once; always for the
  first model). Ledger row + MLflow tags; emits `model_deployed`.
* Failed: nothing changes in serving; the version is tagged `mlops.status=refused` with why, a
  decision and an alert are written; emits `candidate_refused`.
* **Runs** on `candidate_registered` (the event names the version) or manually with `version`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param, dag, get_current_context, task

from include.mlops.adapters.assets import CANDIDATE_REFUSED, CANDIDATE_REGISTERED, MODEL_DEPLOYED
from include.mlops.adapters.notifiers import LoopFailureNotifier

GATE_TASKS = ["loads", "signature", "evaluation", "probe"]


@dag(
    dag_id="deploy_validated_model",
    schedule=[CANDIDATE_REGISTERED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20), "on_failure_callback": LoopFailureNotifier()},
    params={
        "version": Param(
            None, type=["null", "string", "integer"], description="Model version to validate (empty: the triggering or newest candidate)"
        ),
        "strategy": Param(
            None, type=["null", "string"], enum=[None, "canary", "shadow", "direct"], description="How to start it (empty: the spec's)"
        ),
        "require_approval": Param(None, type=["null", "boolean"], description="Ask a person before deploying (empty: the spec's)"),
        "reason": Param("validated candidate", type="string", description="Recorded in the ledger"),
    },
    tags=["mlops-loop", "model", "deployment"],
    doc_md=__doc__,
)
def deploy_validated_model() -> None:
    @task
    def resolve() -> dict[str, Any]:
        from include.mlops.runtime import load_runtime
        from include.mlops.steps.deploy import resolve_candidate

        context = get_current_context()
        version = context["params"].get("version")
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:
                version = version or (event.extra or {}).get("version")
        return resolve_candidate(load_runtime(), str(version) if version else None).to_dict()

    @task(map_index_template="{{ gate_label }}")
    def gate(name: str, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        from include.mlops.runtime import load_runtime
        from include.mlops.steps.deploy import Candidate, gates_label, record_gates, run_gate

        context = get_current_context()
        rt = load_runtime()
        c = Candidate(**candidate)
        results = run_gate(rt, c, name, context["run_id"])
        record_gates(rt, c, results, context["dag"].dag_id, context["run_id"])
        context["gate_label"] = gates_label(results)  # type: ignore[typeddict-unknown-key]
        return [r.to_dict() for r in results]

    @task.branch
    def decide(candidate: dict[str, Any], results: list[list[dict[str, Any]]]) -> str:
        from include.mlops.runtime import load_runtime
        from include.mlops.steps.deploy import Candidate, plan

        params = get_current_context()["params"]
        p = plan(
            load_runtime().spec,
            Candidate(**candidate),
            [r for rs in results for r in rs],
            params.get("strategy"),
            params.get("require_approval"),
        )
        if p.action == "refuse":
            return "refuse"
        return "approve" if p.require_approval else "deploy"

    approve = ApprovalOperator(
        task_id="approve",
        subject="Deploy {{ ti.xcom_pull(task_ids='resolve')['model'] }} version {{ ti.xcom_pull(task_ids='resolve')['version'] }}?",
        body=(
            "All offline gates passed for version **{{ ti.xcom_pull(task_ids='resolve')['version'] }}** "
            "(champion: {{ ti.xcom_pull(task_ids='resolve')['champion'] or 'none' }}). "
            "Gate results are the labels of the `gate` tasks of this run. Approve to deploy it."
        ),
        response_timeout=timedelta(days=1),
    )

    @task(outlets=[MODEL_DEPLOYED], trigger_rule="none_failed_min_one_success")
    def deploy(candidate: dict[str, Any], results: list[list[dict[str, Any]]], *, outlet_events: Any = None) -> dict[str, Any]:
        from include.mlops.runtime import load_runtime
        from include.mlops.steps.deploy import Candidate, deploy, plan

        context = get_current_context()
        rt = load_runtime()
        c = Candidate(**candidate)
        params = context["params"]
        p = plan(rt.spec, c, [r for rs in results for r in rs], params.get("strategy"), params.get("require_approval"))
        assert p.action == "deploy" and p.strategy, p
        reason = params.get("reason") or "validated candidate"
        if c.champion is None:
            reason = f"{reason}; first model: champion directly"
        out = deploy(rt, c, p.strategy, reason, context["dag"].dag_id, context["run_id"])
        outlet_events[MODEL_DEPLOYED].extra = out
        return out

    @task(outlets=[CANDIDATE_REFUSED])
    def refuse(candidate: dict[str, Any], results: list[list[dict[str, Any]]], *, outlet_events: Any = None) -> dict[str, Any]:
        from include.mlops.runtime import load_runtime
        from include.mlops.steps.deploy import Candidate, plan, refuse

        context = get_current_context()
        rt = load_runtime()
        c = Candidate(**candidate)
        flat = [r for rs in results for r in rs]
        p = plan(rt.spec, c, flat, None, None)
        out = refuse(rt, c, p.failed, flat, p.why, context["dag"].dag_id, context["run_id"])
        outlet_events[CANDIDATE_REFUSED].extra = {"version": c.version, "failed_gates": p.failed}
        return out

    @task(trigger_rule="all_done")
    def record_approval(candidate: dict[str, Any]) -> dict[str, Any] | None:
        """A person's 'Reject' is a decision too: record it (nothing else changes)."""
        from include.mlops.runtime import load_runtime
        from include.mlops.steps.deploy import Candidate, refuse

        context = get_current_context()
        answer = context["ti"].xcom_pull(task_ids="approve")
        if not answer or "Reject" not in (answer.get("chosen_options") or []):
            return None
        rt = load_runtime()
        who = (
            (answer.get("responded_by_user") or {}).get("name", "a reviewer")
            if isinstance(answer.get("responded_by_user"), dict)
            else "a reviewer"
        )
        return refuse(
            rt, Candidate(**candidate), ["approval"], [], f"rejected by {who} in the Airflow UI", context["dag"].dag_id, context["run_id"]
        )

    candidate = resolve()
    results = gate.partial(candidate=candidate).expand(name=GATE_TASKS)
    choice = decide(candidate, results)
    deployed = deploy(candidate, results)
    refused = refuse(candidate, results)
    choice >> [approve, deployed, refused]
    approve >> deployed
    approve >> record_approval(candidate)


deploy_validated_model()
