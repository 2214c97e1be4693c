"""Validated deployment: which candidate, what to do once its offline gates have run
(:mod:`include.mlops.steps.gates`), and how it starts serving.

Optional human approval is an Airflow HITL step in the DAG. Then :func:`deploy` starts the version
as ``canary`` or ``shadow`` (challenger alias) or ``direct`` (champion alias); the very first model
becomes champion directly. A refused candidate changes nothing in serving: it is tagged with why,
and an alert is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.domain.policy import GATES
from include.mlops.domain.roles import CANARY, CHALLENGER, CHAMPION, SHADOW
from include.mlops.domain.spec import Spec

if TYPE_CHECKING:
    from include.mlops.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    model: str
    version: str
    mlflow_run_id: str
    champion: str | None
    challenger: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_candidate(rt: Runtime, version: str | None) -> Candidate:
    """The version to validate: the one named, else the newest version still tagged ``candidate``."""
    from include.mlops.adapters.registry import TAG_STATUS, aliases, mlflow_client

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    if version:
        mv = client.get_model_version(rt.model_name, str(version))
    else:
        found = client.search_model_versions(f"name = '{rt.model_name}' and tags.`{TAG_STATUS}` = 'candidate'")
        if not found:
            raise LookupError(f"no version of {rt.model_name} is waiting as a candidate; pass a version")
        mv = max(found, key=lambda v: int(v.version))
    current = aliases(client, rt.model_name)
    return Candidate(rt.model_name, str(mv.version), str(mv.run_id), current.get(CHAMPION), current.get(CHALLENGER))


# -- after the gates --------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    action: str  # deploy | refuse
    strategy: str | None
    require_approval: bool
    failed: list[str]
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(spec: Spec, c: Candidate, results: list[dict[str, Any]], strategy: str | None, require_approval: bool | None) -> Plan:
    """Pure: what to do after the gates. The very first model always becomes champion directly; one
    challenger at a time (a candidate arriving while another is still being evaluated is refused)."""
    failed = sorted(r["gate"] for r in results if not r["passed"])
    covered = {r["gate"] for r in results}
    missing = sorted(set(GATES) - covered)
    if missing:
        failed += [f"{m} (did not run)" for m in missing]
    approval = spec.deployment.require_approval if require_approval is None else require_approval
    if failed:
        return Plan("refuse", None, False, failed, "offline gates failed: " + ", ".join(failed))
    if c.challenger is not None and c.challenger != c.version:
        why = f"challenger v{c.challenger} is still being evaluated; one challenger at a time (retry after its promotion or rollback)"
        return Plan("refuse", None, False, ["challenger_busy"], why)
    chosen = "direct" if c.champion is None else (strategy or spec.deployment.strategy)
    return Plan("deploy", chosen, approval, [])


def deploy(rt: Runtime, c: Candidate, strategy: str, reason: str, dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    """Point the right alias at the candidate (ledger + tags), then ask serving to reload.

    Under the model's alias lock, and only while the aliases are still those the candidate was
    resolved and gated against (``c.champion``, ``c.challenger``): otherwise nothing changes and a
    ``state_changed`` refusal is recorded (the result has ``refused``)."""
    from include.mlops.adapters.registry import AliasConflict, alias_lock, changed_since, mlflow_client, reconcile

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    if strategy not in ("direct", CANARY, SHADOW):
        raise ValueError(f"unknown strategy {strategy!r}; use canary, shadow or direct")
    key = f"{run_id or 'manual'}:deploy:{c.version}"
    try:
        with alias_lock(rt.store, c.model):
            reconcile(rt.store, client, c.model)
            retry = any(rt.store.ledger_entry(f"{key}:{op}") for op in ("champion", "challenger"))
            changed = [] if retry else changed_since(client, c.model, {CHAMPION: c.champion, CHALLENGER: c.challenger})
            if changed:
                raise AliasConflict("state_changed", "; ".join(changed))
            row, alias = _point_aliases(rt, client, c, strategy, reason, key, dag_id, run_id)
    except AliasConflict as exc:
        return _not_deployed(rt, c, strategy, exc, dag_id, run_id)
    rt.store.record_decision(
        rt.model_name,
        "deployment",
        "deployed",
        f"deployed_{strategy}",
        subject=f"version {c.version}",
        version=c.version,
        reasons=[reason],
        inputs={
            "strategy": strategy,
            "alias": alias,
            "previous": row["from_version"],
            "canary_share": rt.spec.deployment.canary_share if strategy == CANARY else None,
        },
        dag_id=dag_id,
        run_id=run_id,
    )
    notify_serving(rt)
    return {"version": c.version, "strategy": strategy, "alias": alias, "previous": row["from_version"], "ledger_id": row["id"]}


def _not_deployed(rt: Runtime, c: Candidate, strategy: str, exc: Any, dag_id: str | None, run_id: str | None) -> dict[str, Any]:
    """The registry moved between the decision and the act (or the lock never came): nothing changed."""
    log.warning("v%s not deployed (%s): %s", c.version, exc.reason_code, exc)
    rt.store.record_decision(
        rt.model_name,
        "deployment",
        "refused",
        exc.reason_code,
        subject=f"version {c.version}",
        version=c.version,
        reasons=[f"not deployed: {exc}"],
        inputs={"strategy": strategy, "decided_on": {CHAMPION: c.champion, CHALLENGER: c.challenger}},
        dag_id=dag_id,
        run_id=run_id,
    )
    return {"version": c.version, "refused": True, "reason_code": exc.reason_code, "messages": [str(exc)]}


def _point_aliases(
    rt: Runtime, client: Any, c: Candidate, strategy: str, reason: str, key: str, dag_id: str | None, run_id: str | None
) -> tuple[dict[str, Any], str]:
    """The alias changes of a deployment (caller holds the alias lock): the ledger row and the alias."""
    from include.mlops.adapters.registry import aliases, remove_alias, set_alias, set_challenger_mode

    actor = f"{dag_id}/{run_id}" if dag_id else "deploy"
    if strategy == "direct":
        row = set_alias(
            rt.store,
            client,
            c.model,
            CHAMPION,
            c.version,
            strategy="direct",
            reason=reason,
            actor=actor,
            op_key=f"{key}:champion",
            dag_id=dag_id,
            run_id=run_id,
            expected=c.champion,
        )
        if aliases(client, c.model).get(CHALLENGER) == c.version:
            remove_alias(
                rt.store,
                client,
                c.model,
                CHALLENGER,
                reason="became champion directly",
                actor=actor,
                op_key=f"{key}:clear-challenger",
                dag_id=dag_id,
                run_id=run_id,
                expected=c.version,
            )
        return row, CHAMPION
    set_challenger_mode(client, c.model, strategy, rt.spec.deployment.canary_share)
    row = set_alias(
        rt.store,
        client,
        c.model,
        CHALLENGER,
        c.version,
        strategy=strategy,
        reason=reason,
        actor=actor,
        op_key=f"{key}:challenger",
        dag_id=dag_id,
        run_id=run_id,
        expected=c.challenger,
    )
    return row, CHALLENGER


def refuse(
    rt: Runtime, c: Candidate, failed: list[str], results: list[dict[str, Any]], why: str, dag_id: str | None, run_id: str | None
) -> dict[str, Any]:
    """Nothing changes in serving: tag the candidate with why, record the decision, alert."""
    from include.mlops.adapters.alerts import raise_alert
    from include.mlops.adapters.registry import TAG_STATUS, mlflow_client

    client = mlflow_client(rt.settings.mlflow_tracking_uri)
    messages = [f"{r['gate']}: {r['message']}" for r in results if not r["passed"]] or [why]
    code = next((r["reason_code"] for r in results if not r["passed"]), "challenger_busy" if "challenger_busy" in failed else "refused")
    client.set_model_version_tag(c.model, c.version, TAG_STATUS, "refused")
    client.set_model_version_tag(c.model, c.version, "mlops.refused_by", ",".join(failed) or why)
    client.set_model_version_tag(c.model, c.version, "mlops.refusal", " | ".join(messages)[:4900])
    rt.store.record_decision(
        rt.model_name,
        "deployment",
        "refused",
        code,
        subject=f"version {c.version}",
        version=c.version,
        reasons=messages,
        inputs={"failed_gates": failed, "champion": c.champion},
        dag_id=dag_id,
        run_id=run_id,
    )
    raise_alert(
        rt.store,
        rt.model_name,
        severity="warning",
        kind="candidate_refused",
        dedupe_key=f"candidate_refused:{c.version}",
        message=f"candidate v{c.version} refused: " + "; ".join(messages)[:900],
        payload={"version": c.version, "failed_gates": failed, "run_id": run_id},
    )
    return {"version": c.version, "refused": True, "failed_gates": failed, "reason_code": code, "messages": messages}


def notify_serving(rt: Runtime) -> None:
    """Best effort: the serving API polls the registry anyway; this only makes the swap immediate."""
    import httpx

    try:
        httpx.post(f"{rt.settings.serving_url}/admin/reload", headers=rt.settings.serving_headers(admin=True), timeout=10.0)
    except httpx.HTTPError as exc:
        log.info("serving API not reachable for an immediate reload (%s); it will pick the change up on its next poll", exc)


# -- entry points of the deploy_validated_model DAG ----------------------------------------------
def plan_after_gates(
    candidate: dict[str, Any], results: list[list[dict[str, Any]]], params: Mapping[str, Any], model: str | None = None
) -> dict[str, Any]:
    """The run's :class:`Plan` (as a dict) from every gate task's results and the DAG params;
    computed once per run and handed to the task that carries it out."""
    from include.mlops.runtime import load_runtime

    flat = [r for rs in results for r in rs]
    p = plan(load_runtime(model=model).spec, Candidate(**candidate), flat, params.get("strategy"), params.get("require_approval"))
    return p.to_dict()


def deploy_planned(
    candidate: dict[str, Any],
    planned: dict[str, Any],
    reason: str | None,
    *,
    dag_id: str | None,
    run_id: str | None,
    model: str | None = None,
) -> dict[str, Any]:
    """Carry out a ``deploy`` plan; the reason of a first model says it went straight to champion."""
    from include.mlops.runtime import load_runtime

    p, c = Plan(**planned), Candidate(**candidate)
    if p.action != "deploy" or not p.strategy:
        raise ValueError(f"not a deployment plan: {p}")
    why = reason or "validated candidate"
    if c.champion is None:
        why = f"{why}; first model: champion directly"
    return deploy(load_runtime(model=model), c, p.strategy, why, dag_id, run_id)


def refuse_planned(
    candidate: dict[str, Any],
    results: list[list[dict[str, Any]]],
    planned: dict[str, Any],
    *,
    dag_id: str | None,
    run_id: str | None,
    model: str | None = None,
) -> dict[str, Any]:
    """Carry out a ``refuse`` plan: the failed gates' messages are the refusal's reasons."""
    from include.mlops.runtime import load_runtime

    p = Plan(**planned)
    flat = [r for rs in results for r in rs]
    return refuse(load_runtime(model=model), Candidate(**candidate), p.failed, flat, p.why, dag_id, run_id)


def record_rejection(
    candidate: dict[str, Any], answer: dict[str, Any] | None, *, dag_id: str | None, run_id: str | None, model: str | None = None
) -> dict[str, Any] | None:
    """A person's 'Reject' in the approval step (``answer``: its XCom) is a refusal too: recorded,
    nothing else changes. ``None`` when nobody rejected the candidate."""
    from include.mlops.runtime import load_runtime

    if not answer or "Reject" not in (answer.get("chosen_options") or []):
        return None
    user = answer.get("responded_by_user")
    who = user.get("name", "a reviewer") if isinstance(user, dict) else "a reviewer"
    why = f"rejected by {who} in the Airflow UI"
    return refuse(load_runtime(model=model), Candidate(**candidate), ["approval"], [], why, dag_id, run_id)
