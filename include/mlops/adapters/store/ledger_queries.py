"""The deployment ledger: append-only, every alias change with who made it and why."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select

from include.mlops.adapters.store.base import StoreBase, new_id
from include.mlops.adapters.store.schema import deployment_ledger, utcnow

#: The ledger strategies of a deployment (a rollback or a promotion is not one).
DEPLOY_STRATEGIES = ("canary", "shadow", "direct")


class LedgerQueries(StoreBase):
    def ledger_entry(self, op_key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deployment_ledger).where(deployment_ledger.c.op_key == op_key)).mappings().first()
        return dict(row) if row else None

    def ledger_latest(self, model: str, alias: str) -> dict[str, Any] | None:
        """The last ledger row of ``alias`` (a removal included)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(deployment_ledger)
                    .where(deployment_ledger.c.model_name == model, deployment_ledger.c.alias == alias)
                    .order_by(deployment_ledger.c.id.desc())
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def alias_holder(self, model: str, alias: str) -> dict[str, Any] | None:
        """Who holds ``alias`` according to the ledger: the row that gave it to its current holder
        (``to_version``), None when nobody holds it (never set, or removed last)."""
        latest = self.ledger_latest(model, alias)
        return latest if latest and latest["to_version"] is not None else None

    def latest_deployment(
        self, model: str, version: str | None = None, strategies: Iterable[str] = DEPLOY_STRATEGIES
    ) -> dict[str, Any] | None:
        """The newest ledger row that deployed a version (of ``version`` when given) with one of ``strategies``."""
        q = select(deployment_ledger).where(
            deployment_ledger.c.model_name == model,
            deployment_ledger.c.to_version.is_not(None),
            deployment_ledger.c.strategy.in_(list(strategies)),
        )
        if version:
            q = q.where(deployment_ledger.c.to_version == str(version))
        with self.engine.connect() as conn:
            row = conn.execute(q.order_by(deployment_ledger.c.id.desc())).mappings().first()
        return dict(row) if row else None

    def append_ledger(
        self,
        *,
        model: str,
        alias: str,
        action: str,
        from_version: str | None,
        to_version: str | None,
        strategy: str | None,
        reason: str,
        actor: str,
        op_key: str,
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Append one alias change; a second call with the same ``op_key`` returns the first row."""
        existing = self.ledger_entry(op_key)
        if existing:
            return existing
        with self.begin() as conn:
            result = conn.execute(
                insert(deployment_ledger).values(
                    model_name=model,
                    alias=alias,
                    action=action,
                    from_version=from_version,
                    to_version=to_version,
                    strategy=strategy,
                    reason=reason,
                    actor=actor,
                    dag_id=dag_id,
                    run_id=run_id,
                    op_key=op_key,
                    created_at=utcnow(),
                )
            )
            created = new_id(result)
        row = self.ledger_entry(op_key)
        assert row is not None and row["id"] == created
        return row

    def list_ledger(self, model: str | None = None, alias: str | None = None) -> list[dict[str, Any]]:
        q = select(deployment_ledger).order_by(deployment_ledger.c.id)
        if model:
            q = q.where(deployment_ledger.c.model_name == model)
        if alias:
            q = q.where(deployment_ledger.c.alias == alias)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]
