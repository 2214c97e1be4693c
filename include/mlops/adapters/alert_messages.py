"""What an alert delivery sends: the generic webhook's JSON document, the Slack message and the email
(documented in docs/operating.md, "Alerts"). Pure formatting, no I/O; :mod:`include.mlops.adapters.alerts`
decides when to send and :mod:`include.mlops.adapters.alert_channels` carries them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Literal

#: Why a document is sent: a new incident (or one never delivered yet), a reminder after the cool-off,
#: an escalation to a higher severity, or the incident's end.
Event = Literal["opened", "reminder", "escalated", "resolved"]
DOCUMENT_SCHEMA = "mlops-loop/alert/v1"
_EVENT_LABEL: dict[str, str] = {"opened": "", "reminder": "Reminder: ", "escalated": "Escalated: ", "resolved": "Resolved: "}
_SLACK_ICON = {"critical": ":red_circle:", "warning": ":warning:", "info": ":information_source:"}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z") if value.tzinfo is None else value.isoformat()
    return str(value)


def alert_document(row: Mapping[str, Any], event: Event = "opened") -> dict[str, Any]:
    """The generic webhook's JSON body (documented in docs/operating.md, "Alerts"), built from an ``alerts`` row."""
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
