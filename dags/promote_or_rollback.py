"""
### promote_or_rollback

The final call with production evidence.

* **Waiting for labels** (`await_labels`, after `early_window_passed` only): labels come
  `label_delay_hours` after the requests, and the early window ends after
  `early_window.min_requests` requests. An automatic promotion waits (no worker slot held) until
  `promotion.min_labelled_rows` of the release's requests are labelled, or, without
  `promotion.test`, until the release has served one monitoring window of traffic (event days, or
  wall time since the deployment); with a test at most two windows of wall time (then
  `awaiting_labels`: a person decides). A version no longer the challenger ends the wait. A run by
  hand never waits, and runs beside a waiting one (up to 3 runs at once; the alias moves re-check
  the state under the model's alias lock).
* **Promote** (after `early_window_passed`, or by hand): the challenger becomes champion, the old
  champion is recorded as previously serving, the challenger alias is cleared. When labels have
  arrived for the window (at least `promotion.min_labelled_rows`), both versions are scored on the
  *same* labelled requests and a promotion that loses by more than `promotion.tolerance` is
  refused (the challenger is removed). With `promotion.test` (`delong` / `bootstrap`) the gain must
  also be significant (at least `promotion.min_gain`, at `promotion.alpha`) on those paired
  scores: a tie or a gain within the noise is refused (`gain_not_significant`, the challenger is
  removed), and so is a promotion before enough labels (`awaiting_labels`, the challenger stays:
  promote again once labelled). Emits `model_promoted`.
* **Bake period** (`promotion.bake_days` > 0): after a promotion the previous champion keeps
  scoring in shadow; `bake` waits (no worker slot held) until the labels cover the period in event
  time, then the two are compared on the same labelled requests: the new champion significantly
  worse is rolled back automatically (decision `bake`, critical alert, `model_rolled_back`), else
  the shadow is removed.
* **Rollback** (by hand: *Trigger DAG w/ config*, `action` = rollback): the champion goes back to
  the version that served before it, read from the ledger (a refused candidate never served, so it
  is never "the previous one"), or to a named `version` that has served. Emits
  `model_rolled_back`.
* Every outcome is a decision with inputs and a reason code, an alert and ledger rows. Triggering
  the same action twice changes nothing the second time; with nothing to roll back to it refuses.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, PokeReturnValue, dag, get_current_context, task

from include.mlops.adapters.assets import loop_assets
from include.mlops.adapters.model_dags import dag_tags, deployment_models, display_name, model_doc
from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier
from include.mlops.adapters.registry import ALIAS_POOL
from include.mlops.catalog import ModelEntry


def promote_or_rollback_dag(entry: ModelEntry) -> None:
    """promote_or_rollback of ``entry``'s model (the default model's DAG id is plain ``promote_or_rollback``)."""
    assets = loop_assets(entry)
    model = None if entry.default else entry.name  # None: the default model, as named when a task runs

    @dag(
        dag_id=entry.dag_id("promote_or_rollback"),
        dag_display_name=display_name(entry, "promote_or_rollback"),
        schedule=[assets.early_window_passed],
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=3,  # a promotion waiting for labels must not hold up a rollback by hand
        default_args={
            "retries": 1,
            "retry_delay": timedelta(seconds=15),
            "on_failure_callback": LoopFailureNotifier(model=model),
            "on_success_callback": LoopRecoveryNotifier(model=model),
        },
        params={
            "action": Param(
                "promote", type="string", enum=["promote", "rollback"], description="promote the challenger, or roll back the champion"
            ),
            "version": Param(
                None,
                type=["null", "string", "integer"],
                description="Version to promote / roll back to (empty: the challenger / the previous one)",
            ),
            "reason": Param("manual", type="string", description="Why (kept in the ledger and the decision)"),
        },
        tags=dag_tags(entry, "model", "deployment"),
        doc_md=model_doc(entry, "promote_or_rollback", __doc__),
    )
    def promote_or_rollback() -> None:
        @task.sensor(
            poke_interval=20, exponential_backoff=True, max_wait=timedelta(minutes=10), timeout=timedelta(days=30), mode="reschedule"
        )
        def await_labels() -> PokeReturnValue:
            """An automatic promotion waits for the release's labels (steps.release.await_labels)."""
            from include.mlops.adapters.events import triggering_events
            from include.mlops.domain.policy import final_request
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.release import await_labels as labels_in

            context = get_current_context()
            request = final_request(context["params"], triggering_events(context).extras())
            done, info = labels_in(load_runtime(model=model), request)
            return PokeReturnValue(is_done=done, xcom_value=info)

        @task
        def decide(awaited: dict[str, Any]) -> dict[str, Any]:
            from include.mlops.adapters.events import triggering_events
            from include.mlops.domain.policy import decide_final_request, final_request
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.release import decide_final

            context = get_current_context()
            request = final_request(context["params"], triggering_events(context).extras())
            rt = load_runtime(model=model)
            verdict = decide_final_request(request, auto_promote=rt.spec.promotion.auto_promote)
            inputs: dict[str, Any] = {"action": request.action}
            if verdict.outcome == "proceed":
                verdict, inputs = decide_final(rt, request.action, request.version)
            if awaited.get("waited"):
                inputs["awaited_labels"] = awaited
            return {"verdict": verdict.to_dict(), "inputs": inputs, "reason": request.reason}

        @task.branch
        def route(d: dict[str, Any]) -> str:
            return {"promote": "promote", "rollback": "rollback"}.get(d["verdict"]["outcome"], "no_change")

        def _act(d: dict[str, Any]) -> dict[str, Any]:
            from include.mlops.domain.policy import Verdict
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.release import act_final

            context = get_current_context()
            return act_final(
                load_runtime(model=model),
                Verdict(**d["verdict"]),
                d["inputs"],
                d["reason"],
                dag_id=context["dag"].dag_id,
                run_id=context["run_id"],
            )

        @task(outlets=[assets.model_promoted], pool=ALIAS_POOL)
        def promote(d: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
            out = _act(d)
            outlet_events[assets.model_promoted].extra = out
            return out

        @task(outlets=[assets.model_rolled_back], pool=ALIAS_POOL)
        def rollback(d: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
            out = _act(d)
            outlet_events[assets.model_rolled_back].extra = out
            return out

        @task(pool=ALIAS_POOL)
        def no_change(d: dict[str, Any]) -> dict[str, Any]:
            return _act(d)

        @task.sensor(poke_interval=120, timeout=timedelta(days=60), mode="reschedule")
        def bake(promoted: dict[str, Any]) -> PokeReturnValue:
            """Wait until the labels cover the bake period (skipped without one: ``bake_days`` 0)."""
            from airflow.sdk.exceptions import AirflowSkipException

            from include.mlops.runtime import load_runtime
            from include.mlops.steps.bake import bake_verdict

            if not promoted.get("bake"):
                raise AirflowSkipException("no bake period (promotion.bake_days is 0, or there was no previous champion)")
            verdict, inputs = bake_verdict(load_runtime(model=model), promoted["bake"])
            return PokeReturnValue(is_done=verdict.outcome != "wait", xcom_value={"verdict": verdict.to_dict(), "inputs": inputs})

        @task.branch
        def route_bake(b: dict[str, Any]) -> str:
            return "bake_rollback" if b["verdict"]["outcome"] == "rollback" else "bake_end"

        def _act_bake(b: dict[str, Any]) -> dict[str, Any]:
            from include.mlops.domain.policy import Verdict
            from include.mlops.runtime import load_runtime
            from include.mlops.steps.bake import act_bake

            context = get_current_context()
            return act_bake(
                load_runtime(model=model), Verdict(**b["verdict"]), b["inputs"], dag_id=context["dag"].dag_id, run_id=context["run_id"]
            )

        @task(outlets=[assets.model_rolled_back], pool=ALIAS_POOL)
        def bake_rollback(b: dict[str, Any], *, outlet_events: Any = None) -> dict[str, Any]:
            out = _act_bake(b)
            outlet_events[assets.model_rolled_back].extra = out
            return out

        @task(pool=ALIAS_POOL)
        def bake_end(b: dict[str, Any]) -> dict[str, Any]:
            return _act_bake(b)

        d = decide(await_labels())
        promoted = promote(d)
        route(d) >> [promoted, rollback(d), no_change(d)]
        baked = bake(promoted)
        route_bake(baked) >> [bake_rollback(baked), bake_end(baked)]

    promote_or_rollback()


for _entry in deployment_models():
    promote_or_rollback_dag(_entry)
