"""Alerts: one module every step of the loop raises its alerts through.

An alert has a severity, a kind and a dedupe key: while an alert with the same key is open, a new
occurrence bumps its count instead of opening another, so one incident is one alert. The ops store
keeps every alert; it is also logged at WARNING (or ERROR for ``critical``) so it shows in the
Airflow task log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from include.mlops.store import Store

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class Alert:
    id: int
    is_new: bool
    dedupe_key: str


def raise_alert(
    store: Store,
    model: str,
    *,
    severity: Severity,
    kind: str,
    dedupe_key: str,
    message: str,
    payload: dict[str, Any] | None = None,
) -> Alert:
    """Record an alert (or bump the open one with the same dedupe key)."""
    alert_id, is_new = store.upsert_alert(model, severity, kind, dedupe_key, message, payload or {})
    level = logging.ERROR if severity == "critical" else logging.WARNING if severity == "warning" else logging.INFO
    log.log(level, "alert #%s [%s/%s]%s %s", alert_id, severity, kind, "" if is_new else " (repeat)", message)
    return Alert(alert_id, is_new, dedupe_key)
