"""Alerts: one module every step of the loop raises its alerts through, and the one that delivers them.

**Recording.** An alert has a severity, a kind and a dedupe key: while an alert with the same key is
open, a new occurrence bumps its count instead of opening another, so one incident is one alert. The
ops store keeps every alert, written before any delivery is tried; it is also logged at WARNING (ERROR
for ``critical``) so it shows in the Airflow task log.

**Delivery** (docs/operating.md, "Alerts"). Channels, each off until configured (env or an Airflow connection):
a generic webhook (JSON POST of :func:`alert_document`), Slack (incoming webhook, :func:`slack_message`)
and email over SMTP (:func:`email_message`). Rules:

* only alerts at or above ``MLOPS_ALERT_MIN_SEVERITY`` are sent;
* a new alert is sent once; a repeat of an open alert is not, unless the cool-off has passed since its
  last delivery (then one reminder) or it came in at a higher severity (escalated: sent at once);
* :func:`resolve_alerts` closes open alerts when their condition clears (a ``resolved`` notice goes to
  the channels if the alert had been delivered), so the next occurrence is a new incident;
* a failed delivery never raises into the caller: it is logged and the alert stays pending
  (``delivered_at`` NULL). It is sent by its next occurrence, after the next successful delivery, or by
  :func:`deliver_pending` (``python -m include.mlops.adapters.alerts deliver-pending``).

Delivery is at least once: when one channel fails and another succeeded, the retry sends to both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from include.mlops.adapters.alert_channels import (
    BREAKER_SECONDS,
    DeliveryError,
    HttpTarget,
    SmtpServer,
    post_json,
    send_email,
    slack_target,
    smtp_server,
    webhook_target,
)
from include.mlops.adapters.alert_messages import DOCUMENT_SCHEMA, Event, alert_document, email_message, slack_message
from include.mlops.adapters.store import Store
from include.mlops.domain.clock import utcnow
from include.mlops.settings import ALERT_SEVERITIES, AlertSettings, Settings, get_settings

__all__ = [
    "BREAKER_SECONDS",
    "DOCUMENT_SCHEMA",
    "FLUSH_LIMIT",
    "PENDING_WINDOW_MIN_MINUTES",
    "SEVERITY_RANK",
    "Alert",
    "DeliveryError",
    "Event",
    "HttpTarget",
    "Severity",
    "SmtpServer",
    "alert_document",
    "configured_channels",
    "deliver_pending",
    "email_message",
    "main",
    "mark_alerted",
    "post_json",
    "raise_alert",
    "resolve_alerts",
    "send_alert",
    "send_email",
    "slack_message",
    "slack_target",
    "smtp_server",
    "webhook_target",
]

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(ALERT_SEVERITIES)}
#: After a successful delivery, at most this many older pending alerts are sent along.
FLUSH_LIMIT = 20
#: Pending alerts count only if last seen within the cool-off, and at least this long ago.
PENDING_WINDOW_MIN_MINUTES = 60.0


@dataclass(frozen=True)
class Alert:
    """What :func:`raise_alert` did: the alert, whether it opened a new incident, and its delivery
    (``off`` | ``not_requested`` | ``below_min_severity`` | ``cooling_off`` | ``delivered`` | ``failed``)."""

    id: int
    is_new: bool
    dedupe_key: str
    count: int = 1
    delivery: str = "off"


# -- raising, resolving, delivering ------------------------------------------------------------
def raise_alert(
    store: Store,
    model: str,
    *,
    severity: Severity,
    kind: str,
    dedupe_key: str,
    message: str,
    payload: dict[str, Any] | None = None,
    links: Mapping[str, str] | None = None,
    deliver: bool = True,
    settings: Settings | None = None,
) -> Alert:
    """Record an alert (or bump the open one with the same dedupe key), then deliver it if the rules
    say so. ``links`` ({name: URL}) are kept in the payload under ``links``. Delivery problems are
    logged, never raised: the stored alert is the record."""
    data = dict(payload or {})
    if links:
        given = data["links"] if isinstance(data.get("links"), dict) else {}
        data["links"] = {**given, **{str(k): str(v) for k, v in links.items()}}
    alert_id, is_new = store.upsert_alert(model, severity, kind, dedupe_key, message, data)
    level = logging.ERROR if severity == "critical" else logging.WARNING if severity == "warning" else logging.INFO
    log.log(level, "alert #%s [%s/%s]%s %s", alert_id, severity, kind, "" if is_new else " (repeat)", message)

    row: dict[str, Any] | None = None
    escalated = False
    if not is_new:
        row = store.get_alert(alert_id)
        if row is not None and SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(row["severity"], 0):
            store.set_alert_severity(alert_id, severity)
            log.warning("alert #%s escalated from %s to %s", alert_id, row["severity"], severity)
            row["severity"], escalated = severity, True
    count = int(row["count"]) if row else 1
    if not deliver:
        return Alert(alert_id, is_new, dedupe_key, count, "not_requested")
    try:
        delivery = _deliver_raised(store, alert_id, row, escalated, (settings or get_settings()).alerts)
    except Exception:  # delivery must never break the step that raised the alert
        log.exception("alert #%s: delivery failed unexpectedly; the alert is kept in the ops store", alert_id)
        delivery = "failed"
    return Alert(alert_id, is_new, dedupe_key, count, delivery)


_E = TypeVar("_E", bound=BaseException)


def mark_alerted(exc: _E, alert: Alert) -> _E:
    """Tag an exception a step raises right after raising its own alert (``raise mark_alerted(exc, alert)``):
    the task failure it causes is then recorded without a second delivery (see ``LoopFailureNotifier``)."""
    exc.mlops_alert_id = alert.id  # type: ignore[attr-defined]
    return exc


def resolve_alerts(
    store: Store,
    model: str,
    *,
    kind: str | None = None,
    dedupe_key: str | None = None,
    dedupe_prefix: str | None = None,
    settings: Settings | None = None,
) -> list[int]:
    """Close the open alerts of ``model`` matching every given filter (at least one), e.g. when
    monitoring is healthy again; the next occurrence opens a new incident. Alerts that had been
    delivered get a ``resolved`` notice (best effort, not retried). Returns the closed ids."""
    rows = store.resolve_alerts(model, kind=kind, dedupe_key=dedupe_key, dedupe_prefix=dedupe_prefix)
    for r in rows:
        log.info("alert #%s [%s/%s] resolved after %s occurrence(s)", r["id"], r["severity"], r["kind"], r["count"])
    delivered = [r for r in rows if r["delivered_at"] is not None]
    if delivered:
        try:
            s = (settings or get_settings()).alerts
            for r in delivered:
                if configured_channels(s) and _wanted(r["severity"], s):
                    send_alert({**r, "status": "resolved"}, "resolved", s)
        except Exception as exc:
            log.warning("could not send the resolved notice (%s); the alerts are closed in the ops store", exc)
    return [int(r["id"]) for r in rows]


def deliver_pending(
    store: Store, model: str | None = None, *, settings: Settings | None = None, since: datetime | None = None, limit: int = 100
) -> dict[str, list[int]]:
    """Send open alerts that were never delivered (a channel was down), oldest first; stops at the
    first failure (the channel is still down: the rest stay pending). Never raises for a delivery.

    Only alerts last seen after ``since`` count; by default the pending window (the cool-off, at least
    an hour), so turning a channel on or lowering the minimum severity does not replay old incidents.
    ``since=datetime.min`` sends every pending alert."""
    return _deliver_pending(store, model, (settings or get_settings()).alerts, limit, since)


def configured_channels(s: AlertSettings) -> list[str]:
    """Names of the channels that are on."""
    return [name for name, _ in _channels(s)]


def send_alert(row: Mapping[str, Any], event: Event, s: AlertSettings) -> list[str]:
    """Send one alert (an ``alerts`` row) to every configured channel; raises :class:`DeliveryError`
    naming the channels that failed (after trying all of them). Returns the channels that took it."""
    doc = alert_document(row, event)
    sent: list[str] = []
    failed: list[str] = []
    for name, channel in _channels(s):
        try:
            channel(doc, s)
        except Exception as exc:
            failed.append(f"{name}: {exc}")
        else:
            sent.append(name)
    if failed:
        raise DeliveryError("; ".join(failed) + (f" (taken by {', '.join(sent)})" if sent else ""))
    return sent


def _wanted(severity: str, s: AlertSettings) -> bool:
    return SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK[s.min_severity]


def _deliver_raised(store: Store, alert_id: int, row: dict[str, Any] | None, escalated: bool, s: AlertSettings) -> str:
    """Apply the delivery rules to an alert that was just raised."""
    if not configured_channels(s):
        return "off"
    row = row or store.get_alert(alert_id)
    if row is None or row["status"] != "open":
        return "off"
    if not _wanted(row["severity"], s):
        return "below_min_severity"
    now = utcnow()
    event: Event
    due_before: datetime | None
    if row["delivered_at"] is None:
        event, due_before = "opened", None
    elif escalated:
        event, due_before = "escalated", now
    else:
        due_before = now - timedelta(minutes=s.cooloff_minutes)
        if row["delivered_at"] > due_before:
            log.info(
                "alert #%s delivered at %s; within the %g min cool-off, not sent again", alert_id, row["delivered_at"], s.cooloff_minutes
            )
            return "cooling_off"
        event = "reminder"
    outcome = _claim_and_send(store, row, event, s, now=now, due_before=due_before)
    if outcome == "delivered":
        try:
            _deliver_pending(store, row["model_name"], s, FLUSH_LIMIT)
        except Exception:
            log.exception("sending older pending alerts failed; they stay pending")
    return outcome


def _claim_and_send(
    store: Store, row: Mapping[str, Any], event: Event, s: AlertSettings, *, now: datetime, due_before: datetime | None
) -> str:
    """Claim the delivery in the store (so concurrent raisers send it once), send, undo the claim on failure."""
    if not store.claim_alert_delivery(int(row["id"]), now=now, due_before=due_before):
        return "cooling_off"  # another process has just delivered it
    try:
        sent = send_alert(row, event, s)
    except Exception as exc:
        store.release_alert_delivery(int(row["id"]), claimed_at=now, previous=row["delivered_at"])
        retry = "its next occurrence or deliver_pending" if row["delivered_at"] is None else "its next occurrence"
        log.warning("alert #%s (%s) not delivered: %s; kept in the ops store, retried on %s", row["id"], event, exc, retry)
        return "failed"
    log.info("alert #%s (%s) delivered to %s", row["id"], event, ", ".join(sent))
    return "delivered"


def _deliver_pending(store: Store, model: str | None, s: AlertSettings, limit: int, since: datetime | None = None) -> dict[str, list[int]]:
    report: dict[str, list[int]] = {"delivered": [], "failed": []}
    if not configured_channels(s):
        return report
    wanted = [sev for sev in ALERT_SEVERITIES if _wanted(sev, s)]
    if since is None:
        since = utcnow() - timedelta(minutes=max(s.cooloff_minutes, PENDING_WINDOW_MIN_MINUTES))
    for row in store.pending_alerts(model, severities=wanted, since=since, limit=limit):
        outcome = _claim_and_send(store, row, "opened", s, now=utcnow(), due_before=None)
        if outcome == "delivered":
            report["delivered"].append(int(row["id"]))
        elif outcome == "failed":
            report["failed"].append(int(row["id"]))
            break
    if report["delivered"] or report["failed"]:
        log.info("pending alerts: delivered %s, failed %s", report["delivered"], report["failed"])
    return report


# -- channels (looked up here, so tests can replace a transport) ----------------------------
def _channels(s: AlertSettings) -> list[tuple[str, Callable[[dict[str, Any], AlertSettings], None]]]:
    out: list[tuple[str, Callable[[dict[str, Any], AlertSettings], None]]] = []
    if s.webhook_url or s.webhook_conn_id:
        out.append(("webhook", _send_webhook))
    if s.slack_webhook_url or s.slack_conn_id:
        out.append(("slack", _send_slack))
    if s.email_to:
        out.append(("email", _send_email))
    return out


def _send_webhook(doc: dict[str, Any], s: AlertSettings) -> None:
    post_json(webhook_target(s), doc, s, headers={"X-Mlops-Alert-Event": str(doc["event"])})


def _send_slack(doc: dict[str, Any], s: AlertSettings) -> None:
    post_json(slack_target(s), slack_message(doc), s)


def _send_email(doc: dict[str, Any], s: AlertSettings) -> None:
    server = smtp_server(s)
    send_email(server, email_message(doc, sender=server.sender, recipients=s.email_to), s)


# -- command line -----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m include.mlops.adapters.alerts deliver-pending [MODEL] [--all]`` | ``channels``."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    settings = get_settings()
    if args[:1] == ["channels"]:
        channels = configured_channels(settings.alerts)
        log.info(
            "alert channels: %s; min severity %s; cool-off %g min",
            ", ".join(channels) or "none (all off)",
            settings.alerts.min_severity,
            settings.alerts.cooloff_minutes,
        )
        return 0
    everything = "--all" in args
    args = [a for a in args if a != "--all"]
    if args[:1] == ["deliver-pending"] and len(args) <= 2:
        model = args[1] if len(args) == 2 else None
        report = deliver_pending(Store.open(settings.ops_db_url), model, settings=settings, since=datetime.min if everything else None)
        log.info("delivered %d pending alert(s), %d failed", len(report["delivered"]), len(report["failed"]))
        return 1 if report["failed"] else 0
    log.error("usage: python -m include.mlops.adapters.alerts deliver-pending [MODEL] [--all] | channels")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
