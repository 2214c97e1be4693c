"""Alerts: one module every step of the loop raises its alerts through, and the one that delivers them.

**Recording.** An alert has a severity, a kind and a dedupe key: while an alert with the same key is
open, a new occurrence bumps its count instead of opening another, so one incident is one alert. The
ops store keeps every alert, written before any delivery is tried; it is also logged at WARNING (ERROR
for ``critical``) so it shows in the Airflow task log.

**Delivery** (README, "Alerts"). Channels, each off until configured (env or an Airflow connection):
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

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Literal, TypeVar

from include.mlops.adapters.store import Store, utcnow
from include.mlops.settings import ALERT_SEVERITIES, AlertSettings, Settings, get_settings

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
#: Why a document is sent: a new incident (or one never delivered yet), a reminder after the cool-off,
#: an escalation to a higher severity, or the incident's end.
Event = Literal["opened", "reminder", "escalated", "resolved"]
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(ALERT_SEVERITIES)}
DOCUMENT_SCHEMA = "mlops-loop/alert/v1"
#: After a successful delivery, at most this many older pending alerts are sent along.
FLUSH_LIMIT = 20
#: Pending alerts count only if last seen within the cool-off, and at least this long ago.
PENDING_WINDOW_MIN_MINUTES = 60.0
#: A destination whose attempt timed out is skipped (its alerts stay pending) for this long in this
#: process, so a black-holed endpoint costs one timeout a minute, not one per alert.
BREAKER_SECONDS = 60.0
_timed_out_until: dict[str, float] = {}
_EVENT_LABEL: dict[str, str] = {"opened": "", "reminder": "Reminder: ", "escalated": "Escalated: ", "resolved": "Resolved: "}
_SLACK_ICON = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}
_USER_AGENT = "mlops-loop-alerts/1"


@dataclass(frozen=True)
class Alert:
    """What :func:`raise_alert` did: the alert, whether it opened a new incident, and its delivery
    (``off`` | ``not_requested`` | ``below_min_severity`` | ``cooling_off`` | ``delivered`` | ``failed``)."""

    id: int
    is_new: bool
    dedupe_key: str
    count: int = 1
    delivery: str = "off"


class DeliveryError(Exception):
    """A channel did not take an alert (after its retries), or is misconfigured."""


def _now() -> datetime:
    """Naive UTC, like every timestamp in the ops store (a seam for tests that move the clock)."""
    return utcnow()


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
    now = _now()
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
        since = _now() - timedelta(minutes=max(s.cooloff_minutes, PENDING_WINDOW_MIN_MINUTES))
    for row in store.pending_alerts(model, severities=wanted, since=since, limit=limit):
        outcome = _claim_and_send(store, row, "opened", s, now=_now(), due_before=None)
        if outcome == "delivered":
            report["delivered"].append(int(row["id"]))
        elif outcome == "failed":
            report["failed"].append(int(row["id"]))
            break
    if report["delivered"] or report["failed"]:
        log.info("pending alerts: delivered %s, failed %s", report["delivered"], report["failed"])
    return report


# -- what is sent ---------------------------------------------------------------------------------
def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if value.tzinfo is None else value.isoformat()
    return str(value)


def alert_document(row: Mapping[str, Any], event: Event = "opened") -> dict[str, Any]:
    """The generic webhook's JSON body (documented in the README, "Alerts"), built from an ``alerts`` row."""
    payload = dict(row.get("payload") or {})
    links = payload.pop("links", None)
    return {
        "schema": DOCUMENT_SCHEMA,
        "event": event,
        "id": int(row["id"]),
        "model": row["model_name"],
        "severity": row["severity"],
        "kind": row["kind"],
        "status": "resolved" if event == "resolved" else row["status"],
        "message": row["message"],
        "dedupe_key": row["dedupe_key"],
        "count": int(row["count"]),
        "first_seen": _iso(row["first_seen"]),
        "last_seen": _iso(row["last_seen"]),
        "payload": payload,
        "links": {str(k): str(v) for k, v in links.items()} if isinstance(links, dict) else {},
    }


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message (``text`` for notifications + Block Kit ``blocks``)."""
    event, severity = doc["event"], str(doc["severity"])
    label = _EVENT_LABEL.get(event, "")
    icon = ":white_check_mark:" if event == "resolved" else _SLACK_ICON.get(severity, "")
    title = f"{label}{severity.upper()} · {doc['model']} · {doc['kind']}"
    context = f"alert #{doc['id']} · seen {doc['count']}× · first {doc['first_seen']} · last {doc['last_seen']}"
    context += f" · key `{_slack_escape(str(doc['dedupe_key']))}`"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150), "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _cut(_slack_escape(str(doc["message"])), 3000)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, 3000)}]},
    ]
    if doc.get("links"):
        refs = " · ".join(f"<{url.replace('|', '%7C').replace('>', '%3E')}|{_slack_escape(name)}>" for name, url in doc["links"].items())
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(refs, 3000)}})
    return {"text": _cut(f"{icon} {title}: {_slack_escape(str(doc['message']))}", 3000), "blocks": blocks}


def email_message(doc: Mapping[str, Any], *, sender: str, recipients: tuple[str, ...] | list[str]) -> EmailMessage:
    """A plain-text alert email: what happened, the counts, the links and the payload."""
    from email.utils import formatdate, make_msgid

    msg = EmailMessage()
    first_line = str(doc["message"]).splitlines()[0] if doc["message"] else ""
    label = _EVENT_LABEL.get(doc["event"], "")
    msg["Subject"] = _cut(f"[mlops-loop] {label}{str(doc['severity']).upper()} {doc['model']}: {doc['kind']} - {first_line}", 200)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="mlops-loop")
    msg["X-Mlops-Alert-Id"] = str(doc["id"])
    msg["X-Mlops-Alert-Event"] = str(doc["event"])
    lines = [
        str(doc["message"]),
        "",
        f"alert #{doc['id']}  model {doc['model']}  severity {doc['severity']}  kind {doc['kind']}  status {doc['status']}",
        f"event {doc['event']}: seen {doc['count']} time(s), first {doc['first_seen']}, last {doc['last_seen']}",
        f"dedupe key: {doc['dedupe_key']}",
    ]
    if doc.get("links"):
        lines += ["", "Links:"] + [f"  {name}: {url}" for name, url in doc["links"].items()]
    lines += ["", "Payload:", json.dumps(doc.get("payload") or {}, indent=2, sort_keys=True, default=str), "", "-- mlops-loop"]
    msg.set_content("\n".join(lines))
    return msg


# -- channels ---------------------------------------------------------------------------------
def _channels(s: AlertSettings) -> list[tuple[str, Callable[[dict[str, Any], AlertSettings], None]]]:
    out: list[tuple[str, Callable[[dict[str, Any], AlertSettings], None]]] = []
    if s.webhook_url or s.webhook_conn_id:
        out.append(("webhook", _send_webhook))
    if s.slack_webhook_url or s.slack_conn_id:
        out.append(("slack", _send_slack))
    if s.email_to:
        out.append(("email", _send_email))
    return out


@dataclass(frozen=True)
class HttpTarget:
    """Where a webhook posts: URL (a secret for Slack), extra headers, optional basic auth."""

    url: str = field(repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    auth: tuple[str, str] | None = field(default=None, repr=False)


def _airflow_connection(conn_id: str) -> Any:
    """An Airflow connection: inside a task through the task SDK, elsewhere from Airflow's secrets
    backends (``AIRFLOW_CONN_<ID>`` environment variables, ...)."""
    try:
        from airflow.sdk import Connection
    except ImportError as exc:  # pragma: no cover - Airflow is installed wherever the loop runs
        raise DeliveryError(f"Airflow connection {conn_id!r} is configured, but Airflow is not importable here") from exc
    try:
        return Connection.get(conn_id)
    except Exception as exc:
        raise DeliveryError(f"Airflow connection {conn_id!r}: {exc}") from exc


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def webhook_target(s: AlertSettings) -> HttpTarget:
    """The generic webhook: ``MLOPS_ALERT_WEBHOOK_CONN_ID`` (URL in the connection's ``host`` or
    ``extra.url``; login/password as basic auth; ``extra.headers``), else ``MLOPS_ALERT_WEBHOOK_URL``."""
    if not s.webhook_conn_id:
        if not s.webhook_url:
            raise DeliveryError("no webhook URL configured")
        return HttpTarget(s.webhook_url)
    conn = _airflow_connection(s.webhook_conn_id)
    extra = conn.extra_dejson or {}
    url = extra.get("url") if _is_url(extra.get("url")) else conn.host if _is_url(conn.host) else None
    if not url:
        raise DeliveryError(f"Airflow connection {s.webhook_conn_id!r} has no webhook URL: put the full URL in its host or extra.url")
    headers = {str(k): str(v) for k, v in (extra.get("headers") or {}).items()}
    auth = (str(conn.login), str(conn.password or "")) if conn.login else None
    return HttpTarget(str(url), headers, auth)


def slack_target(s: AlertSettings) -> HttpTarget:
    """The Slack webhook: ``MLOPS_ALERT_SLACK_CONN_ID`` in the Slack provider's ``slackwebhook`` format
    (password = the webhook URL, or its token with host = ``https://hooks.slack.com/services``;
    or the URL in ``extra.url``), else ``MLOPS_ALERT_SLACK_WEBHOOK_URL``."""
    if not s.slack_conn_id:
        if not s.slack_webhook_url:
            raise DeliveryError("no Slack webhook URL configured")
        return HttpTarget(s.slack_webhook_url)
    conn = _airflow_connection(s.slack_conn_id)
    extra = conn.extra_dejson or {}
    password = str(conn.password or "")
    if _is_url(extra.get("url")):
        return HttpTarget(str(extra["url"]))
    if _is_url(password):
        return HttpTarget(password)
    if password:
        base = str(conn.host) if _is_url(conn.host) else "https://hooks.slack.com/services"
        return HttpTarget(f"{base.rstrip('/')}/{password.lstrip('/')}")
    raise DeliveryError(f"Airflow connection {s.slack_conn_id!r} has no Slack webhook: put the URL or token in its password")


def _backoff(attempt: int) -> float:
    return float(min(0.5 * 2 ** (attempt - 1), 4.0))


def _check_breaker(key: str) -> None:
    until = _timed_out_until.get(key)
    if until is not None and time.monotonic() < until:
        raise DeliveryError(f"skipped: it timed out less than {BREAKER_SECONDS:g} s ago")


def _trip_breaker(key: str) -> None:
    _timed_out_until[key] = time.monotonic() + BREAKER_SECONDS


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)


def post_json(target: HttpTarget, body: Mapping[str, Any], s: AlertSettings, *, headers: Mapping[str, str] | None = None) -> None:
    """POST ``body`` as JSON, each attempt bounded by the timeout; retries refused or reset connections,
    429 and 5xx (``MLOPS_ALERT_RETRIES`` times), never another 4xx; a timeout is not retried and trips
    the breaker (:data:`BREAKER_SECONDS`). Raises :class:`DeliveryError`.

    urllib rather than httpx: httpx logs every request URL at INFO, and a Slack webhook URL is a secret.
    """
    import base64
    import urllib.error
    import urllib.request

    all_headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, **target.headers, **(headers or {})}
    if target.auth:
        all_headers["Authorization"] = "Basic " + base64.b64encode(":".join(target.auth).encode()).decode()
    if not _is_url(target.url):
        raise DeliveryError("the webhook URL must be http:// or https://")
    breaker = f"http:{target.url}"
    _check_breaker(breaker)
    content = json.dumps(body, default=str).encode()
    problem = ""
    for attempt in range(s.retries + 1):
        if attempt:
            time.sleep(_backoff(attempt))
        request = urllib.request.Request(target.url, data=content, headers=all_headers, method="POST")  # noqa: S310 - http(s) checked above
        try:
            with urllib.request.urlopen(request, timeout=s.timeout_seconds) as response:  # noqa: S310
                response.read()
            return
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code} {exc.read()[:200]!r}"
            if exc.code != 429 and exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
            problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if _is_timeout(exc):
                _trip_breaker(breaker)
                break
    raise DeliveryError(problem)


def _send_webhook(doc: dict[str, Any], s: AlertSettings) -> None:
    post_json(webhook_target(s), doc, s, headers={"X-Mlops-Alert-Event": str(doc["event"])})


def _send_slack(doc: dict[str, Any], s: AlertSettings) -> None:
    post_json(slack_target(s), slack_message(doc), s)


@dataclass(frozen=True)
class SmtpServer:
    """Where alert emails go; ``tls`` is ``starttls``, ``ssl`` or ``none``."""

    host: str
    port: int
    tls: str
    user: str | None
    password: str | None = field(repr=False)
    sender: str


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def smtp_server(s: AlertSettings) -> SmtpServer:
    """``MLOPS_ALERT_SMTP_CONN_ID`` (the SMTP provider's connection: host, port, login, password,
    ``extra.from_email``, ``extra.disable_ssl``, ``extra.disable_tls``), else ``MLOPS_ALERT_SMTP_*``."""
    if not s.smtp_conn_id:
        return SmtpServer(s.smtp_host, s.smtp_port, s.smtp_tls, s.smtp_user, s.smtp_password, s.smtp_from)
    conn = _airflow_connection(s.smtp_conn_id)
    extra = conn.extra_dejson or {}
    tls = "ssl" if not _truthy(extra.get("disable_ssl", False)) else "none" if _truthy(extra.get("disable_tls", False)) else "starttls"
    port = int(conn.port or {"ssl": 465, "starttls": 587, "none": 25}[tls])
    return SmtpServer(
        str(conn.host or "localhost"), port, tls, conn.login or None, conn.password or None, str(extra.get("from_email") or s.smtp_from)
    )


def send_email(server: SmtpServer, msg: EmailMessage, s: AlertSettings) -> None:
    """Send over SMTP with the alert timeout; retries connection problems and 4xx replies, not 5xx
    (refused recipient, failed login) nor a timeout (trips the breaker). Raises :class:`DeliveryError`."""
    import smtplib
    import ssl

    breaker = f"smtp:{server.host}:{server.port}"
    _check_breaker(breaker)
    problem = ""
    for attempt in range(s.retries + 1):
        if attempt:
            time.sleep(_backoff(attempt))
        try:
            client: smtplib.SMTP
            if server.tls == "ssl":
                client = smtplib.SMTP_SSL(server.host, server.port, timeout=s.timeout_seconds, context=ssl.create_default_context())
            else:
                client = smtplib.SMTP(server.host, server.port, timeout=s.timeout_seconds)
            with client:
                if server.tls == "starttls":
                    client.starttls(context=ssl.create_default_context())
                if server.user:
                    client.login(server.user, server.password or "")
                client.send_message(msg)
            return
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP {server.host}:{server.port} refused {sorted(exc.recipients)}") from exc
        except smtplib.SMTPResponseException as exc:
            problem = f"SMTP {server.host}:{server.port}: {exc.smtp_code} {exc.smtp_error!r}"
            if exc.smtp_code >= 500:
                break
        except OSError as exc:  # refused, disconnected, timed out (smtplib's own errors are OSErrors too)
            problem = f"SMTP {server.host}:{server.port}: {type(exc).__name__}: {exc}"
            if _is_timeout(exc):
                _trip_breaker(breaker)
                break
    raise DeliveryError(problem)


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
