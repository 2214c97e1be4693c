"""The human approval step of deploy_validated_model and a shadow release, on the real components:
dag.test() of the DAGs (the approval step waits in Airflow's HITL ``awaiting_input`` state until a
person answers through the Airflow REST API, here the core API app in-process on the same metadata
database), a real MLflow registry, candidates trained by the loop's own training, and the ops store.

* approved: the candidate is deployed in shadow (the spec's strategy), its early window is judged on
  the shadow records serving writes next to the champion's answers, and it is promoted on labels;
* rejected: nothing changes in serving, the rejection is a refusal with the reviewer's name."""

from __future__ import annotations

import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from include.mlops.adapters.registry import CHALLENGER, CHAMPION, TAG_MODE, aliases, mlflow_client, set_alias
from tests.integration.loop_candidates import LOW_FLOORS, WEAK, register, train_module_candidates
from tests.integration.loop_helpers import log_traffic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="module")
def trained(mlflow_server, flights, tmp_path_factory):
    """A poor January model and a normal one, trained by the loop's training."""
    return train_module_candidates(
        mlflow_server,
        flights,
        tmp_path_factory,
        "approval_src",
        {"weak": (date(2013, 1, 1), date(2013, 1, 21), WEAK), "normal": (date(2013, 1, 1), date(2013, 1, 28), None)},
    )


class Reviewer:
    """A person answering the approval step through Airflow's REST API (PATCH .../hitlDetails), as the
    Required Actions page does: waits in a thread for the step to ask, then answers. If it never asks,
    the step is failed so that dag.test() ends (and the test fails on the run's states)."""

    def __init__(self, answer: str, username: str = "ann", timeout: float = 300.0):
        self.answer, self.username, self.timeout = answer, username, timeout
        self.response: dict[str, Any] | None = None
        self.asked: dict[str, Any] | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Reviewer:
        from airflow.api_fastapi.app import create_app, get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from fastapi.testclient import TestClient

        # the API app and the reviewer's token are made here, before the run starts, not in the thread
        self._client = TestClient(create_app(apps="core"))
        self._token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=self.username, role="admin"))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=30)

    def _waiting(self) -> Any:
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            return session.execute(
                select(TaskInstance.id, TaskInstance.run_id, HITLDetail.subject, HITLDetail.body, HITLDetail.options)
                .join(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
                .where(
                    TaskInstance.dag_id == "deploy_validated_model",
                    TaskInstance.task_id == "approve",
                    TaskInstance.state == "awaiting_input",
                )
            ).first()

    def _run(self) -> None:
        row = None
        try:
            deadline = time.monotonic() + self.timeout
            while row is None and time.monotonic() < deadline:
                row = self._waiting()
                time.sleep(0.5)
            if row is None:
                self.error = "the approval step never asked"
                return
            self.asked = {"subject": row.subject, "body": row.body, "options": list(row.options)}
            resp = self._client.patch(
                f"/api/v2/dags/deploy_validated_model/dagRuns/{row.run_id}/taskInstances/approve/-1/hitlDetails",
                json={"chosen_options": [self.answer], "params_input": {}},
                headers={"Authorization": f"Bearer {self._token}"},
            )
            if resp.status_code != 200:
                self.error = f"{resp.status_code}: {resp.text[:500]}"
            else:
                self.response = resp.json()
        except Exception as exc:  # surfaced by the test's assertions
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if self.response is None:
                self._fail_waiting_step(row)

    @staticmethod
    def _fail_waiting_step(row: Any) -> None:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import update

        with create_session() as session:
            session.execute(
                update(TaskInstance)
                .where(TaskInstance.dag_id == "deploy_validated_model", TaskInstance.task_id == "approve")
                .where(TaskInstance.state == "awaiting_input")
                .values(state="failed")
            )


def states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances() if ti.map_index in (-1, 0)}


def deploy_run(dags, reviewer: Reviewer, **conf):
    with reviewer:
        run = dags.get_dag("deploy_validated_model").test(run_conf=conf)
    assert reviewer.error is None, reviewer.error
    return run


def run_dag(dags, dag_id, **conf):
    """dag.test() with every param given (a run_conf key left out would keep the previous run's value)."""
    defaults = {"check_early_window": {"version": None}, "promote_or_rollback": {"action": "promote", "version": None, "reason": "test"}}
    run = dags.get_dag(dag_id).test(run_conf={**defaults[dag_id], **conf})
    return run, {ti.task_id: ti.state for ti in run.get_task_instances()}


def log_shadow_traffic(rt, flights, model_name, champion, shadow, day):
    """What serving writes in shadow mode: the champion answers every request (its labelled record),
    the challenger scores the same requests and its score is a second record with route ``shadow``."""
    n = log_traffic(rt, flights, model_name, [(champion, CHAMPION)], day=day)
    log_traffic(rt, flights, model_name, [(shadow, "shadow")], day=day, labels=False)
    return n


def test_approved_candidate_is_released_in_shadow_then_promoted_on_labels(
    airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, dags, spec_variant
):
    spec_variant("shadow", deployment={"strategy": "shadow", "require_approval": True, **LOW_FLOORS}, early_window={"min_requests": 100})
    from include.mlops.runtime import load_runtime

    rt = load_runtime()
    client = mlflow_client(mlflow_env["url"])
    v1, v2 = register(client, model_name, trained, "weak", "normal")
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="test", op_key="first")
    ledger_before = len(rt.store.list_ledger(model_name))

    # 1. every gate passes, the run waits for a person, who approves: deployed as the spec says (shadow)
    reviewer = Reviewer("Approve", username="ann")
    run = deploy_run(dags, reviewer, version=v2)
    st = states(run)
    assert run.state == "success" and st["approve"] == "success" and st["deploy"] == "success", st
    assert st["refuse"] == "skipped" and st["record_approval"] == "success", st
    assert reviewer.asked["options"] == ["Approve", "Reject"]
    assert reviewer.asked["subject"] == f"Deploy {model_name} version {v2}?" and f"champion: {v1}" in reviewer.asked["body"]
    assert reviewer.response["responded_by"]["name"] == "ann" and reviewer.response["chosen_options"] == ["Approve"]
    gates = {d["subject"].split(" / ")[1]: d["outcome"] for d in rt.store.list_decisions(model_name, "gate")}
    assert set(gates.values()) == {"passed"} and len(gates) == 5, gates
    assert aliases(client, model_name) == {CHAMPION: v1, CHALLENGER: v2}
    assert client.get_registered_model(model_name).tags[TAG_MODE] == "shadow"
    (deployed,) = rt.store.list_decisions(model_name, "deployment")
    assert (deployed["outcome"], deployed["reason_code"]) == ("deployed", "deployed_shadow") and deployed["inputs"]["alias"] == CHALLENGER
    last = rt.store.list_ledger(model_name)[-1]
    assert len(rt.store.list_ledger(model_name)) == ledger_before + 1
    assert (last["alias"], last["from_version"], last["to_version"], last["strategy"]) == (CHALLENGER, None, v2, "shadow")
    assert not any(d["outcome"] == "refused" for d in rt.store.list_decisions(model_name))  # an approval is no refusal

    # 2. the early window is judged on the shadow's records (the champion answered every request)
    n = log_shadow_traffic(rt, flights, model_name, v1, v2, date(2013, 2, 12))
    run, st = run_dag(dags, "check_early_window", version=v2)
    assert run.state == "success" and st["passed"] == "success" and st["roll_back"] == "skipped", st
    (window,) = rt.store.list_decisions(model_name, "early_window")
    assert window["outcome"] == "passed" and window["inputs"]["release"]["strategy"] == "shadow", window
    signals = window["inputs"]["signals"]
    assert signals["requests"] == n and signals["champion_requests"] == n and signals["errors"] == 0
    assert "score_psi_vs_holdout" in window["inputs"] and window["report_uri"]

    # 3. promoted on the labels of the requests the champion answered, both versions scored offline
    run, st = run_dag(dags, "promote_or_rollback", action="promote")
    assert st["promote"] == "success", st
    assert aliases(client, model_name) == {CHAMPION: v2}
    promo = rt.store.list_decisions(model_name, "promotion")[-1]
    assert (promo["outcome"], promo["reason_code"]) == ("promote", "wins_on_production_labels"), promo
    realized = promo["inputs"]["realized"]
    assert realized["rows"] >= 300 and realized["challenger"] > realized["champion"]
    ledger = [(r["alias"], r["action"], r["from_version"], r["to_version"]) for r in rt.store.list_ledger(model_name)][-2:]
    assert ledger == [(CHAMPION, "promoted", v1, v2), (CHALLENGER, "promoted", v2, None)]
    assert client.get_model_version(model_name, v1).tags["mlops.status"] == "retired"


def test_rejected_candidate_changes_nothing_and_is_recorded(
    airflow_db, ml_runtime, mlflow_env, model_name, flights, trained, dags, spec_variant
):
    """The spec does not ask for approval; the run's ``require_approval`` param does. 'Reject': the
    deployment is skipped, the aliases and the ledger stay, and the rejection is a refusal decision
    (reason ``refused``, gate ``approval``) with the reviewer's name, a tag on the version and an alert."""
    spec_variant("strict", deployment=LOW_FLOORS)
    from include.mlops.runtime import load_runtime

    rt = load_runtime()
    client = mlflow_client(mlflow_env["url"])
    v1, v2 = register(client, model_name, trained, "weak", "normal")
    set_alias(rt.store, client, model_name, CHAMPION, v1, strategy="direct", reason="first", actor="test", op_key="first")
    ledger_before = rt.store.list_ledger(model_name)

    reviewer = Reviewer("Reject", username="bob")
    run = deploy_run(dags, reviewer, version=v2, require_approval=True)
    st = states(run)
    assert run.state == "success" and st["approve"] == "success", st
    assert st["deploy"] == "skipped" and st["refuse"] == "skipped" and st["record_approval"] == "success", st
    assert reviewer.response["chosen_options"] == ["Reject"]

    assert aliases(client, model_name) == {CHAMPION: v1}
    assert rt.store.list_ledger(model_name) == ledger_before
    (refusal,) = rt.store.list_decisions(model_name, "deployment")
    assert (refusal["outcome"], refusal["reason_code"]) == ("refused", "refused"), refusal
    assert refusal["inputs"]["failed_gates"] == ["approval"] and refusal["reasons"] == ["rejected by bob in the Airflow UI"]
    tags = client.get_model_version(model_name, v2).tags
    assert tags["mlops.status"] == "refused" and tags["mlops.refused_by"] == "approval"
    alerts = [a for a in rt.store.list_alerts(model_name) if a["kind"] == "candidate_refused"]
    assert len(alerts) == 1 and "rejected by bob" in alerts[0]["message"]
