"""MLflow registry conventions and the deployment ledger.

Aliases, never stages: ``champion`` serves; ``challenger`` is a candidate running as a canary (it
answers a sticky share of traffic) or in shadow (it scores, the champion answers). How the
challenger runs is kept as registered-model tags, written *before* the alias moves, so a reader
that sees the alias also sees its mode:

    mlops.challenger_mode = canary | shadow
    mlops.canary_share    = 0.2

Every alias change goes through :func:`set_alias` / :func:`remove_alias`, which append it to the
ledger in the ops store (who, which DAG run, from which version to which, strategy, reason) and
mirror it as MLflow version tags. The alias is written first, then the ledger row keyed by an
idempotency key: a retry after a failure between the two finds the alias already set and writes the
missing row with the *ledger's* previous holder, so the two never disagree once the task has been
retried. :func:`reconcile` repairs what a task that never came back left behind (or a change made
by hand in the MLflow UI) by appending the observed change, and runs before every change.

Alias changes are serialized and compare-and-set: each one holds the model's lock in the ops store
(:func:`alias_lock`, a lease any process or host respects; the DAG tasks that change aliases also
share the one-slot Airflow pool :data:`ALIAS_POOL`), and is refused with :class:`AliasConflict`
(``state_changed``) when the alias is no longer held by the version the caller decided on
(``expected``); a caller that decided on several aliases re-checks them all under the lock first.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.store import Store
from include.mlops.domain.roles import ALIASES, CHALLENGER, CHAMPION

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

TAG_MODE = "mlops.challenger_mode"
TAG_SHARE = "mlops.canary_share"
#: Version tags.
TAG_STATUS = "mlops.status"  # candidate | refused | challenger | champion | retired | rolled_back
TAG_DAG_RUN = "mlops.dag_run_id"
TAG_REASON = "mlops.reason"
#: On a training run whose registered model was refitted on window + holdout (``training.refit_with_holdout``).
TAG_REFIT = "mlops.refit"
TAG_LEDGER_PREFIX = "mlops.ledger."

#: The Airflow pool (one slot) every alias-changing task runs in.
ALIAS_POOL = "mlops_alias"
#: How long an alias lock is held at most (a holder that died frees it after this) and how long a
#: change waits for it before giving up with ``alias_busy``.
LOCK_LEASE_SECONDS = 120.0
LOCK_WAIT_SECONDS = 90.0
#: ``expected`` of a change that does not compare (a hand-made change, the tests' setup).
UNCHECKED = "<unchecked>"


class AliasConflict(RuntimeError):
    """An alias change refused: ``state_changed`` (the alias is no longer where the caller decided
    it was) or ``alias_busy`` (another change held the model's lock for too long)."""

    def __init__(self, reason_code: str, message: str):
        self.reason_code = reason_code
        super().__init__(message)


_held = threading.local()


def _lock_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


@contextmanager
def alias_lock(store: Store, model: str, *, wait: float = LOCK_WAIT_SECONDS, lease: float = LOCK_LEASE_SECONDS) -> Iterator[None]:
    """Hold ``model``'s alias lock (re-entrant within a thread): one alias change at a time."""
    key = (str(store.engine.url), model)
    held: set[tuple[str, str]] = getattr(_held, "keys", None) or set()
    _held.keys = held
    if key in held:
        yield
        return
    owner = _lock_owner()
    deadline = time.monotonic() + wait
    while not store.try_alias_lock(model, owner, lease):
        if time.monotonic() > deadline:
            holder = store.alias_lock_holder(model) or {}
            raise AliasConflict(
                "alias_busy", f"the alias lock of {model} is held by {holder.get('owner')} until {holder.get('expires_at')}"
            )
        time.sleep(0.1)
    held.add(key)
    try:
        yield
    finally:
        held.discard(key)
        if not store.release_alias_lock(model, owner):
            log.warning("the alias lock of %s expired while held by %s (a change took longer than %ss)", model, owner, lease)


def _check_expected(model: str, alias: str, current: str | None, expected: str | None, target: str | None) -> None:
    """Compare-and-set: the alias must still be where the caller decided it was (or already where
    the change puts it: a retry of the same change)."""
    if expected == UNCHECKED or current in (expected, target):
        return
    raise AliasConflict(
        "state_changed",
        f"{alias} of {model} is held by {current or 'nobody'}, not {expected or 'nobody'} as when the change was decided",
    )


def quiet_model_imports() -> None:
    """Import skops.io (how MLflow stores the sklearn models) once, with warnings muted.

    At import, skops finds the module of every scipy.special function by probing each module in
    ``sys.modules``; inside an Airflow task that touches Airflow's deprecated-module shims, which
    answer every probe with a warning: about 1,200 task-log lines and seconds of work per task.
    """
    import sys
    import warnings

    if "skops.io" in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Airflow's DeprecatedImportWarning is one
        warnings.simplefilter("ignore", DeprecationWarning)
        import skops.io  # noqa: F401


def mlflow_client(tracking_uri: str) -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)  # log_model(registered_model_name=...) uses the global one
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def aliases(client: MlflowClient, model: str) -> dict[str, str]:
    """Current aliases of ``model`` (alias -> version); empty when the model is not registered."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(model)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {k: str(v) for k, v in (rm.aliases or {}).items()}


@dataclass(frozen=True)
class ServingConfig:
    """What the serving API should serve right now."""

    champion: str | None
    challenger: str | None
    mode: str | None  # canary | shadow | None
    canary_share: float


def serving_config(client: MlflowClient, model: str, default_share: float) -> ServingConfig:
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(model)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            return ServingConfig(None, None, None, default_share)
        raise
    al = {k: str(v) for k, v in (rm.aliases or {}).items()}
    tags = rm.tags or {}
    challenger = al.get(CHALLENGER)
    mode = tags.get(TAG_MODE, "canary") if challenger else None
    try:
        share = float(tags.get(TAG_SHARE, default_share))
    except ValueError:
        share = default_share
    return ServingConfig(al.get(CHAMPION), challenger, mode, min(max(share, 0.0), 1.0))


def _mirror(client: MlflowClient, model: str, row: dict[str, Any]) -> None:
    """Write the ledger row as a tag on the versions it concerns (MLflow's UI then tells the story)."""
    when = row["created_at"].strftime("%Y-%m-%dT%H:%M:%SZ") if row.get("created_at") else ""
    text = (
        f"{when} {row['alias']}: {row['from_version'] or '-'} -> {row['to_version'] or '-'}"
        f" ({row['strategy'] or row['action']}) by {row['actor']}: {row['reason']}"
    )[:4900]
    for version in {row["from_version"], row["to_version"]} - {None}:
        client.set_model_version_tag(model, str(version), f"{TAG_LEDGER_PREFIX}{row['id']:06d}", text)


def _status_tags(client: MlflowClient, model: str, row: dict[str, Any]) -> None:
    alias, to_v, from_v = row["alias"], row["to_version"], row["from_version"]
    if to_v is not None:
        client.set_model_version_tag(model, str(to_v), TAG_STATUS, alias)
    if from_v is not None and from_v != to_v:
        current = aliases(client, model)
        if str(from_v) not in current.values():
            status = "rolled_back" if row["action"] == "rolled_back" else "retired"
            client.set_model_version_tag(model, str(from_v), TAG_STATUS, status)


def reconcile(store: Store, client: MlflowClient, model: str, actor: str = "reconcile") -> list[dict[str, Any]]:
    """Append a ledger row for every alias whose MLflow holder differs from the ledger's (under the
    alias lock: a change under way elsewhere is not mistaken for a discrepancy)."""
    with alias_lock(store, model):
        return _reconcile(store, client, model, actor)


def _reconcile(store: Store, client: MlflowClient, model: str, actor: str) -> list[dict[str, Any]]:
    current = aliases(client, model)
    fixed = []
    for alias in ALIASES:
        latest = store.ledger_latest(model, alias)
        in_ledger = latest["to_version"] if latest else None
        in_mlflow = current.get(alias)
        if in_ledger == in_mlflow:
            continue
        row = store.append_ledger(
            model=model,
            alias=alias,
            action="set" if in_mlflow else "removed",
            from_version=in_ledger,
            to_version=in_mlflow,
            strategy=None,
            reason="MLflow alias differs from the ledger (an interrupted task or a change made outside the loop); recorded as observed",
            actor=actor,
            op_key=f"reconcile:{model}:{alias}:{latest['id'] if latest else 0}:{in_mlflow}",
        )
        _mirror(client, model, row)
        fixed.append(row)
        log.warning("ledger reconciled: %s %s %s -> %s", model, alias, in_ledger, in_mlflow)
    return fixed


def changed_since(client: MlflowClient, model: str, decided: dict[str, str | None]) -> list[str]:
    """How the aliases now differ from those a decision was made on (``alias -> version``, None:
    nobody); empty when nothing changed. Call it under :func:`alias_lock` before acting."""
    now = aliases(client, model)
    return [
        f"{alias} is v{now.get(alias) or '-'}, not v{want or '-'} as when it was decided"
        for alias, want in decided.items()
        if now.get(alias) != (None if want is None else str(want))
    ]


def set_alias(
    store: Store,
    client: MlflowClient,
    model: str,
    alias: str,
    version: str,
    *,
    strategy: str | None,
    reason: str,
    actor: str,
    op_key: str,
    dag_id: str | None = None,
    run_id: str | None = None,
    action: str = "set",
    expected: str | None = UNCHECKED,
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` and append the change to the ledger (idempotent by ``op_key``),
    under the model's alias lock, only if ``alias`` is still held by ``expected`` (None: nobody)."""
    with alias_lock(store, model):
        return _set_alias(
            store,
            client,
            model,
            alias,
            str(version),
            expected,
            dict(strategy=strategy, reason=reason, actor=actor, op_key=op_key, dag_id=dag_id, run_id=run_id, action=action),
        )


def _set_alias(
    store: Store, client: MlflowClient, model: str, alias: str, version: str, expected: str | None, row: dict[str, Any]
) -> dict[str, Any]:
    op_key = row["op_key"]
    done = store.ledger_entry(op_key)
    if done is None:
        if expected != UNCHECKED:
            _check_expected(model, alias, aliases(client, model).get(alias), expected, version)
        holder = store.alias_holder(model, alias)
        previous = holder["to_version"] if holder else None
        client.set_registered_model_alias(model, alias, version)
        done = store.append_ledger(
            model=model,
            alias=alias,
            from_version=previous,
            to_version=version,
            **row,
        )
    else:  # the ledger has it: make sure MLflow does too (a retry after the row was written)
        client.set_registered_model_alias(model, alias, version)
    _mirror(client, model, done)
    _status_tags(client, model, done)
    return done


def remove_alias(
    store: Store,
    client: MlflowClient,
    model: str,
    alias: str,
    *,
    reason: str,
    actor: str,
    op_key: str,
    dag_id: str | None = None,
    run_id: str | None = None,
    action: str = "removed",
    expected: str | None = UNCHECKED,
) -> dict[str, Any] | None:
    """Remove ``alias`` and record it, under the model's alias lock and only if it is still held by
    ``expected`` (the holder the caller means to remove); None when neither MLflow nor the ledger has it."""
    with alias_lock(store, model):
        return _remove_alias(
            store,
            client,
            model,
            alias,
            expected,
            dict(reason=reason, actor=actor, op_key=op_key, dag_id=dag_id, run_id=run_id, action=action),
        )


def _remove_alias(
    store: Store, client: MlflowClient, model: str, alias: str, expected: str | None, row: dict[str, Any]
) -> dict[str, Any] | None:
    from mlflow.exceptions import MlflowException

    done = store.ledger_entry(row["op_key"])
    if done is None:
        holder = store.alias_holder(model, alias)
        previous = holder["to_version"] if holder else None
        current = aliases(client, model).get(alias)
        if previous is None and current is None:
            return None
        _check_expected(model, alias, current, expected, None)
        if current is not None:
            try:
                client.delete_registered_model_alias(model, alias)
            except MlflowException as exc:  # already gone: fine
                if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
        done = store.append_ledger(model=model, alias=alias, from_version=previous, to_version=None, strategy=None, **row)
    elif aliases(client, model).get(alias) is not None:
        client.delete_registered_model_alias(model, alias)
    _mirror(client, model, done)
    _status_tags(client, model, done)
    return done


def previously_serving(store: Store, model: str) -> str | None:
    """The version that was champion before the current one, from the ledger (never "version - 1")."""
    latest = store.ledger_latest(model, CHAMPION)
    if latest is None:
        return None
    return str(latest["from_version"]) if latest["from_version"] else None


def set_challenger_mode(client: MlflowClient, model: str, mode: str, share: float) -> None:
    """Tags the serving API reads with the challenger alias; written before the alias moves."""
    client.set_registered_model_tag(model, TAG_MODE, mode)
    client.set_registered_model_tag(model, TAG_SHARE, f"{share:.4f}")
