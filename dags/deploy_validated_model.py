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

from include.mlops.adapters.assets import loop_assets
from include.mlops.adapters.model_dags import dag_tags, deployment_models, display_name, model_doc
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
from include.mlops.adapters.registry import ALIAS_POOL
from include.mlops.catalog import ModelEntry
from include.mlops.domain.policy import GATE_TASKS

#: the XCom key of the run's deployment plan (``decide``'s return value is its branch choice)
PLAN = "plan"
#: what the approval step asks a person (templates over the resolved candidate)
APPROVAL_SUBJECT = "Deploy {{ ti.xcom_pull(task_ids='resolve')['model'] }} version {{ ti.xcom_pull(task_ids='resolve')['version'] }}?"
APPROVAL_BODY = (
    "All offline gates passed for version **{{ ti.xcom_pull(task_ids='resolve')['version'] }}** "
    "(champion: {{ ti.xcom_pull(task_ids='resolve')['champion'] or 'none' }}). "
    "Gate results are the labels of the `gate` tasks of this run. Approve to deploy it."
)


#: the XCom key of the person's answer (chosen options and who answered), kept whatever the answer
ANSWER = "answer"


class AnswerKeepingApproval(ApprovalOperator):
    """Airflow's approval step that also keeps the answer as the XCom ``answer``: on 'Reject' the
    operator skips the deployment by raising, so its return value (the answer) is never pushed."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = {"chosen_options": event.get("chosen_options"), "responded_by_user": event.get("responded_by_user")}
        context["ti"].xcom_push(key=ANSWER, value=answer)
        return super().execute_complete(context, event)


def deploy_validated_model_dag(entry: ModelEntry) -> None:
    """deploy_validated_model of ``entry``'s model (the default model's DAG id is plain ``deploy_validated_model``)."""
    assets = loop_assets(entry)
    model = None if entry.default else entry.name  # None: the default model, as named when a task runs

    @dag(
        dag_id=entry.dag_id("deploy_validated_model"),
        dag_display_name=display_name(entry, "deploy_validated_model"),
        schedule=[assets.candidate_registered],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        default_args={
            "retries": 1,
            "retry_delay": timedelta(seconds=20),
            "on_failure_callback": LoopFailureNotifier(model=model),
            "on_success_callback": LoopRecoveryNotifier(model=model),
        },
        params={
            "version": Param(
                None,
                type=["null", "string", "integer"],
                description="Model version to validate (empty: the triggering or newest candidate)",
            ),
            "strategy": Param(
                None, type=["null", "string"], enum=[None, "canary", "shadow", "direct"], description="How to start it (empty: the spec's)"
            ),
            "require_approval": Param(None, type=["null", "boolean"], description="Ask a person before deploying (empty: the spec's)"),
            "reason": Param("validated candidate", type="string", description="Recorded in the ledger"),
        },
        tags=dag_tags(entry, "model", "deployment"),
        doc_md=model_doc(entry, "deploy_validated_model", __doc__),
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
            return resolve_candidate(load_runtime(model=model), str(version) if version else None).to_dict()

        @task(map_index_template="{{ gate_label }}")
        def gate(name: str, candidate: dict[str, Any]) -> list[dict[str, Any]]:
            from include.mlops.steps.gates import check_gate, gates_label

            context = get_current_context()
            results = check_gate(name, candidate, dag_id=context["dag"].dag_id, run_id=context["run_id"], model=model)
            context["gate_label"] = gates_label(results)  # type: ignore[typeddict-unknown-key]
            return [r.to_dict() for r in results]

        @task.branch
        def decide(candidate: dict[str, Any], results: list[list[dict[str, Any]]]) -> str:
            """Plan once what follows the gates (the XCom ``plan``); return the task that carries it out."""
            from include.mlops.steps.deploy import plan_after_gates

            context = get_current_context()
            plan = plan_after_gates(candidate, results, context["params"], model=model)
            context["ti"].xcom_push(key=PLAN, value=plan)
            if plan["action"] == "refuse":
                return "refuse"
            return "approve" if plan["require_approval"] else "deploy"

        approve = AnswerKeepingApproval(task_id="approve", subject=APPROVAL_SUBJECT, body=APPROVAL_BODY, response_timeout=timedelta(days=1))

        @task(outlets=[assets.model_deployed], trigger_rule="none_failed_min_one_success", pool=ALIAS_POOL)
        def deploy(candidate: dict[str, Any], plan: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
            from include.mlops.steps.deploy import deploy_planned

            context = get_current_context()
            reason = context["params"].get("reason")
            out = deploy_planned(candidate, plan, reason, dag_id=context["dag"].dag_id, run_id=context["run_id"], model=model)
            if out.get("refused"):  # the aliases moved since the gates (decision recorded): nothing deployed, no event
                from airflow.sdk.exceptions import AirflowSkipException

                raise AirflowSkipException(f"not deployed ({out['reason_code']}): {'; '.join(out['messages'])}")
            outlet_events[assets.model_deployed].extra = out
            return out

        @task(outlets=[assets.candidate_refused])
        def refuse(
            candidate: dict[str, Any], results: list[list[dict[str, Any]]], plan: dict[str, Any], *, outlet_events: Any = None
        ) -> dict[str, Any]:
            from include.mlops.steps.deploy import refuse_planned

            context = get_current_context()
            out = refuse_planned(candidate, results, plan, dag_id=context["dag"].dag_id, run_id=context["run_id"], model=model)
            outlet_events[assets.candidate_refused].extra = {"version": candidate["version"], "failed_gates": plan["failed"]}
            return out

        @task(trigger_rule="all_done")
        def record_approval(candidate: dict[str, Any]) -> dict[str, Any] | None:
            """A person's 'Reject' is a decision too: record it (nothing else changes)."""
            from include.mlops.steps.deploy import record_rejection

            context = get_current_context()
            answer = context["ti"].xcom_pull(task_ids="approve", key=ANSWER)
            return record_rejection(candidate, answer, dag_id=context["dag"].dag_id, run_id=context["run_id"], model=model)

        candidate = resolve()
        results = gate.partial(candidate=candidate).expand(name=list(GATE_TASKS))
        choice = decide(candidate, results)
        deployed = deploy(candidate, choice[PLAN])
        refused = refuse(candidate, results, choice[PLAN])
        choice >> [approve, deployed, refused]
        approve >> deployed
        deployed >> record_approval(candidate)  # not downstream of approve: a Reject skips approve's direct downstream tasks

    deploy_validated_model()


for _entry in deployment_models():
    deploy_validated_model_dag(_entry)
