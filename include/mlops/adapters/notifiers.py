"""Airflow notifiers of the loop: a failed task becomes an alert through :mod:`include.mlops.adapters.alerts`.

DAG files import this module at parse time, so it imports only the stdlib and Airflow's
``BaseNotifier``; settings, the ops store and the delivery code load when a callback runs::

    from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier

    default_args={
        ...,
        "on_failure_callback": LoopFailureNotifier(model=model),
        "on_success_callback": LoopRecoveryNotifier(model=model),
    }

Alerts are per model: each DAG's notifiers are built with the model its copy runs (``None`` for the
default model, named when the callback runs, as :func:`~include.mlops.runtime.load_runtime` does).

Airflow 3.3 calls ``on_failure_callback`` in the worker's task runner once the task is ``failed``
(its last try; ``on_retry_callback`` covers the tries before), with the task context plus
``exception``; for a task that died without reporting (killed, heartbeat timeout) the DAG processor
calls it with a context rebuilt from the task instance and no ``exception``. Airflow logs and swallows
a callback's exception, and these notifiers never raise one anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

    from include.mlops.adapters.alerts import Alert, Severity
    from include.mlops.settings import Settings

log = logging.getLogger(__name__)

TASK_FAILED = "task_failed"
_TRACEBACK_CHARS = 4000


def task_log_url(airflow_url: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int | None = None) -> str:
    """The task instance's log in the Airflow 3 UI (the same route as Airflow's own ``ti.log_url``)."""
    url = f"{airflow_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}"
    if map_index is not None and map_index >= 0:
        url += f"/mapped/{map_index}"
    return url + (f"?try_number={try_number}" if try_number else "")


def failure_facts(context: Mapping[str, Any]) -> dict[str, Any]:
    """What an on_failure_callback context says about the failure (plain JSON-able values)."""
    import traceback

    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    exc = context.get("exception")
    facts: dict[str, Any] = {
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None) or "unknown_dag",
        "task_id": getattr(ti, "task_id", None),
        "run_id": context.get("run_id") or getattr(ti, "run_id", None),
        "map_index": getattr(ti, "map_index", -1),
        "try_number": getattr(ti, "try_number", None),
        "max_tries": getattr(ti, "max_tries", None),
        "hostname": getattr(ti, "hostname", None),
    }
    if isinstance(exc, BaseException):
        facts["exception_type"] = type(exc).__name__
        facts["exception"] = str(exc)[:2000]
        facts["traceback"] = "".join(traceback.format_exception(exc))[-_TRACEBACK_CHARS:]
        # a step that raised its own alert marks its exception (or the one it was re-raised from)
        facts["mlops_alert_id"] = getattr(exc, "mlops_alert_id", None) or getattr(exc.__cause__, "mlops_alert_id", None)
    elif exc is not None:
        facts["exception_type"], facts["exception"] = None, str(exc)[:2000]
    else:
        facts["exception_type"], facts["exception"] = None, context.get("reason")
    return {k: v for k, v in facts.items() if v is not None}


def _model_name(settings: Settings, model: str | None = None) -> str:
    """The failing DAG's model (alerts are per model): the notifier's own ``model``, else the
    default model's; falls back to the spec file's stem if the default spec is broken."""
    if model:
        return model
    if settings.model_name_override:
        return settings.model_name_override
    try:
        from include.mlops.domain.spec import load_spec

        return load_spec(settings.spec_path).name
    except Exception as exc:
        log.warning("spec %s did not load (%s); filing the alert under %r", settings.spec_path, exc, settings.spec_path.stem)
        return settings.spec_path.stem


def record_task_failure(
    context: Mapping[str, Any], *, severity: Severity = "critical", kind: str = TASK_FAILED, model: str | None = None
) -> Alert:
    """Record (and deliver) the failure alert: one per ``dag_id.task_id`` while open, with the
    exception, the try number and a link to the log. A failure whose exception already raised its
    own alert (``exc.mlops_alert_id``, see :func:`include.mlops.adapters.alerts.mark_alerted`) is recorded
    but not delivered again."""
    from include.mlops.adapters.alerts import raise_alert
    from include.mlops.adapters.store import Store
    from include.mlops.settings import get_settings

    facts = failure_facts(context)
    settings = get_settings()
    dag_id, task_id, run_id = facts["dag_id"], facts.get("task_id"), facts.get("run_id")
    where = f"{dag_id}.{task_id}" if task_id else f"DAG run of {dag_id}"
    tries = f" (try {facts['try_number']} of {facts['max_tries'] + 1})" if "try_number" in facts and "max_tries" in facts else ""
    cause = (
        f"{facts.get('exception_type') or 'failure'}: {facts.get('exception') or 'no exception reported (killed, timed out or crashed)'}"
    )
    links: dict[str, str] = {}
    if run_id and task_id:
        links["log"] = task_log_url(
            settings.alerts.airflow_url, dag_id, run_id, task_id, facts.get("map_index", -1), facts.get("try_number")
        )
    if run_id:
        links["dag_run"] = f"{settings.alerts.airflow_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    return raise_alert(
        Store.open(settings.ops_db_url),
        _model_name(settings, model),
        severity=severity,
        kind=kind,
        dedupe_key=f"{kind}:{dag_id}.{task_id}" if task_id else f"{kind}:{dag_id}",
        message=f"{where} failed{tries}: {cause}"[:1500],
        payload=facts,
        links=links,
        deliver="mlops_alert_id" not in facts,
        settings=settings,
    )


def record_task_success(context: Mapping[str, Any], *, kind: str = TASK_FAILED, model: str | None = None) -> list[int]:
    """Resolve the open failure alert of this task once it succeeds, unless that alert came from another
    mapped instance of the same run (that one is still failed). Returns the closed alert ids."""
    from include.mlops.adapters.alerts import resolve_alerts
    from include.mlops.adapters.store import Store
    from include.mlops.settings import get_settings

    facts = failure_facts(context)
    if not facts.get("task_id"):
        return []
    settings = get_settings()
    store = Store.open(settings.ops_db_url)
    model = _model_name(settings, model)
    key = f"{kind}:{facts['dag_id']}.{facts['task_id']}"
    open_alert = store.find_open_alert(model, key)
    if open_alert is None:
        return []
    failed = open_alert.get("payload") or {}
    if failed.get("run_id") == facts.get("run_id") and failed.get("map_index", -1) != facts.get("map_index", -1):
        return []
    return resolve_alerts(store, model, dedupe_key=key, settings=settings)


class LoopFailureNotifier(BaseNotifier):
    """``on_failure_callback`` for every task of the loop: a ``task_failed`` alert (severity
    ``critical`` by default) in the ops store, delivered to the configured channels, filed under
    ``model`` (the DAG factory passes its model; ``None``: the default model). Never raises."""

    template_fields = ()

    def __init__(self, *, severity: Severity = "critical", kind: str = TASK_FAILED, model: str | None = None) -> None:
        super().__init__()
        self.severity = severity
        self.kind = kind
        self.model = model

    def __call__(self, *args: Any) -> None:
        try:
            super().__call__(*args)
        except Exception:
            log.exception("%s failed; the task's state is unaffected", type(self).__name__)

    def notify(self, context: Context) -> None:
        try:
            alert = record_task_failure(context, severity=self.severity, kind=self.kind, model=self.model)
            log.info("task failure recorded as alert #%s (%s)", alert.id, alert.delivery)
        except Exception:
            log.exception("could not record the task failure as an alert")


class LoopRecoveryNotifier(BaseNotifier):
    """``on_success_callback``: a task that succeeds again resolves its open ``task_failed`` alert, so
    its next failure is a new incident (and the channels get a ``resolved`` notice). Never raises."""

    template_fields = ()

    def __init__(self, *, kind: str = TASK_FAILED, model: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.model = model

    def __call__(self, *args: Any) -> None:
        try:
            super().__call__(*args)
        except Exception:
            log.exception("%s failed; the task's state is unaffected", type(self).__name__)

    def notify(self, context: Context) -> None:
        try:
            closed = record_task_success(context, kind=self.kind, model=self.model)
            if closed:
                log.info("task succeeded again: resolved alert(s) %s", closed)
        except Exception:
            log.exception("could not resolve the task's failure alert")
