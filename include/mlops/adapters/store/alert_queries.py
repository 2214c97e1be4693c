"""Alerts: one open alert per incident (its dedupe key), and their delivery state."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from include.mlops.adapters.store.base import StoreBase, jsonable, new_id
from include.mlops.adapters.store.schema import alerts, utcnow


class AlertQueries(StoreBase):
    def upsert_alert(
        self, model: str, severity: str, kind: str, dedupe_key: str, message: str, payload: dict[str, Any]
    ) -> tuple[int, bool]:
        """Open a new alert, or bump the open one with the same dedupe key. Returns (id, is_new)."""
        now = utcnow()
        with self.begin() as conn:
            row = conn.execute(
                select(alerts.c.id).where(alerts.c.model_name == model, alerts.c.dedupe_key == dedupe_key, alerts.c.status == "open")
            ).first()
            if row:
                conn.execute(
                    update(alerts)
                    .where(alerts.c.id == row.id)
                    .values(count=alerts.c.count + 1, last_seen=now, message=message, payload=jsonable(payload))
                )
                return int(row.id), False
            result = conn.execute(
                insert(alerts).values(
                    model_name=model,
                    severity=severity,
                    kind=kind,
                    dedupe_key=dedupe_key,
                    message=message,
                    payload=jsonable(payload),
                    status="open",
                    count=1,
                    first_seen=now,
                    last_seen=now,
                )
            )
            return new_id(result), True

    def list_alerts(self, model: str | None = None) -> list[dict[str, Any]]:
        q = select(alerts).order_by(alerts.c.id)
        if model:
            q = q.where(alerts.c.model_name == model)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    # -- alert delivery (include/mlops/adapters/alerts.py): delivered_at is the delivery state -------------
    # NULL = not delivered yet (pending); a time = last successful delivery (opening or reminder).
    def get_alert(self, alert_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        return dict(row) if row else None

    def claim_alert_delivery(self, alert_id: int, *, now: datetime, due_before: datetime | None = None) -> bool:
        """Mark an open alert as delivered at ``now`` before sending it, if it is due: never delivered,
        or (with ``due_before``) last delivered at or before that time. Atomic, so of two processes
        raising the same alert at once only one sends it. False: not due (or already claimed)."""
        never = alerts.c.delivered_at.is_(None)
        due = never if due_before is None else never | (alerts.c.delivered_at <= due_before)
        with self.begin() as conn:
            result = conn.execute(update(alerts).where(alerts.c.id == alert_id, alerts.c.status == "open", due).values(delivered_at=now))
            return bool(result.rowcount == 1)

    def release_alert_delivery(self, alert_id: int, *, claimed_at: datetime, previous: datetime | None) -> None:
        """Undo a claim whose delivery failed: the alert is due again (pending when ``previous`` is None)."""
        with self.begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id, alerts.c.delivered_at == claimed_at).values(delivered_at=previous))

    def find_open_alert(self, model: str, dedupe_key: str) -> dict[str, Any] | None:
        """The open alert with this dedupe key, if any."""
        q = select(alerts).where(alerts.c.model_name == model, alerts.c.dedupe_key == dedupe_key, alerts.c.status == "open")
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def set_alert_severity(self, alert_id: int, severity: str) -> None:
        """Escalate an open alert (a repeat came in at a higher severity)."""
        with self.begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values(severity=severity))

    def pending_alerts(
        self, model: str | None = None, *, severities: Iterable[str], since: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Open alerts of these severities never delivered (last seen at or after ``since``), oldest first."""
        q = (
            select(alerts)
            .where(alerts.c.status == "open", alerts.c.delivered_at.is_(None), alerts.c.severity.in_(list(severities)))
            .order_by(alerts.c.id)
            .limit(limit)
        )
        if model:
            q = q.where(alerts.c.model_name == model)
        if since is not None:
            q = q.where(alerts.c.last_seen >= since)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def resolve_alerts(
        self, model: str, *, kind: str | None = None, dedupe_key: str | None = None, dedupe_prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Close the open alerts of ``model`` matching every given filter (at least one is required);
        returns them as they were before closing. The next occurrence opens a new alert."""
        if kind is None and dedupe_key is None and dedupe_prefix is None:
            raise ValueError("resolve_alerts needs kind, dedupe_key or dedupe_prefix (refusing to close every open alert)")
        q = select(alerts).where(alerts.c.model_name == model, alerts.c.status == "open")
        if kind is not None:
            q = q.where(alerts.c.kind == kind)
        if dedupe_key is not None:
            q = q.where(alerts.c.dedupe_key == dedupe_key)
        if dedupe_prefix is not None:
            q = q.where(alerts.c.dedupe_key.startswith(dedupe_prefix, autoescape=True))
        with self.begin() as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(alerts.c.id)).mappings()]
            if rows:
                conn.execute(
                    update(alerts).where(alerts.c.id.in_([r["id"] for r in rows]), alerts.c.status == "open").values(status="resolved")
                )
        return rows
