"""Alert rules (dedupe, cool-off, severity, escalation, resolve, pending) with a fake transport and a
controlled clock; the documents sent (webhook, Slack, email); the alert settings."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from include.mlops.adapters import alert_channels, alerts
from include.mlops.adapters.alerts import (
    DeliveryError,
    HttpTarget,
    alert_document,
    configured_channels,
    deliver_pending,
    email_message,
    mark_alerted,
    raise_alert,
    resolve_alerts,
    slack_message,
)
from include.mlops.adapters.store import Store
from include.mlops.settings import get_settings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, 0)


@pytest.fixture(autouse=True)
def _fresh_breaker(monkeypatch):
    monkeypatch.setattr(alert_channels, "_timed_out_until", {})


@pytest.fixture
def store(tmp_path):
    return Store.open(f"sqlite:///{tmp_path / 'ops.db'}")


@pytest.fixture
def clock(monkeypatch):
    """The clock of the ops store and of delivery, moved by hand."""
    from include.mlops.adapters.store import alert_queries

    now = {"t": T0}
    monkeypatch.setattr(alerts, "utcnow", lambda: now["t"])
    monkeypatch.setattr(alert_queries, "utcnow", lambda: now["t"])

    def advance(**delta: float) -> None:
        now["t"] += timedelta(**delta)

    return advance


class FakeTransport:
    """Stands in for HTTP (post_json) and SMTP (send_email); ``down`` makes every send fail."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.mails: list[Any] = []
        self.down = False

    def post(self, target: HttpTarget, body: dict[str, Any], s: Any, *, headers: Any = None) -> None:
        if self.down:
            raise DeliveryError("HTTP 503 'down'")
        self.posts.append((target.url, json.loads(json.dumps(body))))

    def mail(self, server: Any, msg: Any, s: Any) -> None:
        if self.down:
            raise DeliveryError("SMTP refused")
        self.mails.append(msg)

    def docs(self, url: str = "https://hooks.example.com/a") -> list[dict[str, Any]]:
        return [b for u, b in self.posts if u == url]


@pytest.fixture
def transport(monkeypatch):
    t = FakeTransport()
    monkeypatch.setattr(alerts, "post_json", t.post)
    monkeypatch.setattr(alerts, "send_email", t.mail)
    return t


def settings(**env: str):
    base = {"MLOPS_ALERT_WEBHOOK_URL": "https://hooks.example.com/a"}
    return get_settings({**base, **env})


def _raise(store: Store, key: str = "drift:temp", severity: str = "warning", s: Any = None, **kw: Any):
    return raise_alert(
        store,
        "flights",
        severity=severity,  # type: ignore[arg-type]
        kind=kw.pop("kind", "drift"),
        dedupe_key=key,
        message=kw.pop("message", "temp drifted"),
        payload=kw.pop("payload", {"psi": 0.4}),
        settings=s or settings(),
        **kw,
    )


# -- rules ------------------------------------------------------------------------------------
def test_every_channel_is_off_by_default(store, transport):
    s = get_settings({})
    assert configured_channels(s.alerts) == []
    a = _raise(store, s=s)
    assert (a.is_new, a.delivery) == (True, "off") and transport.posts == []
    assert store.get_alert(a.id)["delivered_at"] is None


def test_existing_callers_signature_still_works(store):
    a = raise_alert(store, "flights", severity="warning", kind="batch_quarantined", dedupe_key="q:1", message="m", payload={"x": 1})
    assert (a.id, a.is_new, a.dedupe_key) == (1, True, "q:1")


def test_one_incident_is_one_delivery(store, transport, clock):
    results = [_raise(store) for _ in range(4)]
    assert [r.delivery for r in results] == ["delivered", "cooling_off", "cooling_off", "cooling_off"]
    assert len({r.id for r in results}) == 1 and results[-1].count == 4
    assert [d["event"] for d in transport.docs()] == ["opened"]


def test_one_reminder_after_the_cooloff_then_quiet_again(store, transport, clock):
    _raise(store)
    clock(minutes=359)
    assert _raise(store).delivery == "cooling_off"
    clock(minutes=1)
    reminder = _raise(store)
    assert reminder.delivery == "delivered"
    clock(minutes=10)
    assert _raise(store).delivery == "cooling_off"
    assert [(d["event"], d["count"]) for d in transport.docs()] == [("opened", 1), ("reminder", 3)]


def test_cooloff_is_a_setting(store, transport, clock):
    s = settings(MLOPS_ALERT_COOLOFF_MINUTES="5")
    _raise(store, s=s)
    clock(minutes=5)
    assert _raise(store, s=s).delivery == "delivered"


def test_minimum_severity(store, transport, clock):
    assert _raise(store, key="a", severity="info").delivery == "below_min_severity"
    assert _raise(store, key="b", severity="warning").delivery == "delivered"
    strict = settings(MLOPS_ALERT_MIN_SEVERITY="critical")
    assert _raise(store, key="c", severity="warning", s=strict).delivery == "below_min_severity"
    assert _raise(store, key="d", severity="critical", s=strict).delivery == "delivered"
    assert [d["dedupe_key"] for d in transport.docs()] == ["b", "d"]
    assert len(store.list_alerts("flights")) == 4  # the store keeps every alert
    # lowering the minimum makes the recent open alerts below the old one pending: sent along
    chatty = settings(MLOPS_ALERT_MIN_SEVERITY="info")
    assert _raise(store, key="e", severity="info", s=chatty).delivery == "delivered"
    assert [d["dedupe_key"] for d in transport.docs()] == ["b", "d", "e", "a", "c"]


def test_escalation_is_sent_at_once(store, transport, clock):
    first = _raise(store, severity="warning")
    worse = _raise(store, severity="critical")
    assert worse.delivery == "delivered" and worse.id == first.id
    assert store.get_alert(first.id)["severity"] == "critical"
    assert [(d["event"], d["severity"]) for d in transport.docs()] == [("opened", "warning"), ("escalated", "critical")]
    assert _raise(store, severity="warning").delivery == "cooling_off"  # never de-escalates


def test_failed_delivery_never_raises_and_the_next_occurrence_retries(store, transport, clock):
    transport.down = True
    first = _raise(store)
    assert first.delivery == "failed" and store.get_alert(first.id)["delivered_at"] is None
    transport.down = False
    again = _raise(store)
    assert again.delivery == "delivered"
    assert [(d["event"], d["count"]) for d in transport.docs()] == [("opened", 2)]


def test_failed_reminder_is_retried_by_the_next_occurrence(store, transport, clock):
    _raise(store)
    clock(hours=7)
    transport.down = True
    assert _raise(store).delivery == "failed"
    transport.down = False
    assert _raise(store).delivery == "delivered"
    assert [d["event"] for d in transport.docs()] == ["opened", "reminder"]


def test_unexpected_errors_in_delivery_are_contained(store, monkeypatch, clock):
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in a channel")

    monkeypatch.setattr(alerts, "alert_document", explode)
    a = _raise(store)
    assert a.delivery == "failed" and store.get_alert(a.id)["delivered_at"] is None


def test_deliver_pending_sends_oldest_first_and_stops_at_the_first_failure(store, transport, clock):
    transport.down = True
    ids = [_raise(store, key=k).id for k in ("a", "b", "c")]
    _raise(store, key="quiet", severity="info")
    assert deliver_pending(store, "flights", settings=settings()) == {"delivered": [], "failed": [ids[0]]}
    transport.down = False
    assert deliver_pending(store, "flights", settings=settings(), limit=2) == {"delivered": ids[:2], "failed": []}
    assert deliver_pending(store, settings=settings()) == {"delivered": [ids[2]], "failed": []}
    assert deliver_pending(store, settings=settings()) == {"delivered": [], "failed": []}


def test_pending_means_recent_so_a_new_channel_does_not_replay_old_incidents(store, transport, clock):
    off = get_settings({})
    old = _raise(store, key="batch_quarantined:1", s=off)
    clock(hours=7)
    recent = _raise(store, key="batch_quarantined:2", s=off)
    clock(minutes=30)
    assert deliver_pending(store, settings=settings()) == {"delivered": [recent.id], "failed": []}
    assert deliver_pending(store, settings=settings(), since=datetime.min) == {"delivered": [old.id], "failed": []}


def test_a_successful_delivery_flushes_what_failures_left(store, transport, clock):
    transport.down = True
    left = _raise(store, key="a")
    transport.down = False
    _raise(store, key="b")
    assert [d["dedupe_key"] for d in transport.docs()] == ["b", "a"]
    assert store.get_alert(left.id)["delivered_at"] is not None


def test_resolve_closes_sends_a_notice_for_delivered_alerts_and_reopens_fresh(store, transport, clock):
    a = _raise(store, key="drift:temp")
    b = _raise(store, key="drift:wind", severity="info")
    other = _raise(store, key="rollback:3", severity="critical", kind="model_rolled_back")
    assert resolve_alerts(store, "flights", dedupe_prefix="drift:", settings=settings()) == [a.id, b.id]
    assert store.get_alert(other.id)["status"] == "open"
    resolved = [d for d in transport.docs() if d["event"] == "resolved"]
    assert [(d["id"], d["status"]) for d in resolved] == [(a.id, "resolved")]
    fresh = _raise(store, key="drift:temp")
    assert fresh.is_new and fresh.id != a.id and fresh.delivery == "delivered"
    assert resolve_alerts(store, "flights", kind="model_rolled_back", settings=settings()) == [other.id]


def test_resolve_needs_a_filter(store):
    with pytest.raises(ValueError, match="kind, dedupe_key or dedupe_prefix"):
        resolve_alerts(store, "flights")


def test_resolve_prefix_is_literal(store, transport, clock):
    _raise(store, key="drift_x")
    assert resolve_alerts(store, "flights", dedupe_prefix="drift%", settings=settings()) == []


def test_only_one_of_two_concurrent_claims_wins(store):
    a = _raise(store, s=get_settings({}))
    assert store.claim_alert_delivery(a.id, now=T0) is True
    assert store.claim_alert_delivery(a.id, now=T0) is False
    store.release_alert_delivery(a.id, claimed_at=T0, previous=None)
    assert store.get_alert(a.id)["delivered_at"] is None


def test_not_delivering_on_request(store, transport):
    assert _raise(store, deliver=False).delivery == "not_requested" and transport.posts == []


def test_mark_alerted_tags_the_exception():
    exc = mark_alerted(ValueError("refused"), alerts.Alert(7, True, "k"))
    assert exc.mlops_alert_id == 7  # type: ignore[attr-defined]


# -- documents ----------------------------------------------------------------------------------
ROW = {
    "id": 12,
    "model_name": "flights",
    "severity": "critical",
    "kind": "early_window_breach",
    "dedupe_key": "early_window_breach:4",
    "message": "v4 <canary> breached: error rate 0.31 > 0.05 & p95 1200 ms",
    "payload": {"version": "4", "links": {"report": "http://127.0.0.1:8001/r?a=1|2"}},
    "status": "open",
    "count": 3,
    "first_seen": datetime(2026, 3, 1, 12, 0, 0, 123456),
    "last_seen": datetime(2026, 3, 1, 12, 5, 0),
    "delivered_at": None,
}


def test_webhook_document_shape():
    doc = alert_document(ROW, "reminder")
    assert doc == {
        "schema": "mlops-loop/alert/v1",
        "event": "reminder",
        "id": 12,
        "model": "flights",
        "severity": "critical",
        "kind": "early_window_breach",
        "status": "open",
        "message": ROW["message"],
        "dedupe_key": "early_window_breach:4",
        "count": 3,
        "first_seen": "2026-03-01T12:00:00.123456Z",
        "last_seen": "2026-03-01T12:05:00Z",
        "payload": {"version": "4"},
        "links": {"report": "http://127.0.0.1:8001/r?a=1|2"},
    }
    assert json.loads(json.dumps(doc)) == doc
    assert alert_document(ROW, "resolved")["status"] == "resolved"
    assert alert_document({**ROW, "payload": {}})["links"] == {}


def test_raise_alert_keeps_links_in_the_payload(store, transport, clock):
    _raise(store, links={"log": "http://127.0.0.1:8080/dags/d/runs/r/tasks/t"})
    (doc,) = transport.docs()
    assert doc["links"] == {"log": "http://127.0.0.1:8080/dags/d/runs/r/tasks/t"} and "links" not in doc["payload"]


def test_slack_message_shape():
    msg = slack_message(alert_document(ROW, "opened"))
    assert set(msg) == {"text", "blocks"}
    assert msg["text"].startswith(":red_circle: CRITICAL · flights · early_window_breach: v4 &lt;canary&gt;")
    header, section, context, links = msg["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "CRITICAL · flights · early_window_breach", "emoji": True}}
    assert section["text"] == {"type": "mrkdwn", "text": "v4 &lt;canary&gt; breached: error rate 0.31 &gt; 0.05 &amp; p95 1200 ms"}
    assert "alert #12 · seen 3×" in context["elements"][0]["text"] and "`early_window_breach:4`" in context["elements"][0]["text"]
    assert links["text"]["text"] == "<http://127.0.0.1:8001/r?a=1%7C2|report>"
    long = slack_message(alert_document({**ROW, "message": "x" * 5000, "kind": "k" * 200}, "reminder"))
    assert len(long["blocks"][0]["text"]["text"]) == 150 and long["blocks"][0]["text"]["text"].startswith("Reminder: CRITICAL")
    assert len(long["blocks"][1]["text"]["text"]) == 3000
    assert slack_message(alert_document(ROW, "resolved"))["text"].startswith(":white_check_mark: Resolved: CRITICAL")


def test_email_message():
    msg = email_message(alert_document(ROW, "opened"), sender="loop@example.com", recipients=("a@example.com", "b@example.com"))
    assert (
        msg["Subject"] == "[mlops-loop] CRITICAL flights: early_window_breach - v4 <canary> breached: error rate 0.31 > 0.05 & p95 1200 ms"
    )
    assert (msg["From"], msg["To"], msg["X-Mlops-Alert-Id"], msg["X-Mlops-Alert-Event"]) == (
        "loop@example.com",
        "a@example.com, b@example.com",
        "12",
        "opened",
    )
    body = msg.get_content()
    assert "dedupe key: early_window_breach:4" in body and "report: http://127.0.0.1:8001/r?a=1|2" in body and '"version": "4"' in body


def test_email_goes_to_the_configured_recipients(store, transport, clock):
    s = get_settings({"MLOPS_ALERT_EMAIL_TO": "oncall@example.com; ml@example.com", "MLOPS_ALERT_SMTP_FROM": "loop@example.com"})
    assert configured_channels(s.alerts) == ["email"]
    _raise(store, s=s)
    (msg,) = transport.mails
    assert msg["To"] == "oncall@example.com, ml@example.com" and msg["From"] == "loop@example.com"


# -- HTTP retries -------------------------------------------------------------------------------
class _Response:
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def read(self) -> bytes:
        return b"ok"


def _http_error(code: int) -> Exception:
    import io
    import urllib.error

    return urllib.error.HTTPError("https://hooks.example.com/a", code, "status", {}, io.BytesIO(b"no"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answers", "calls", "ok"),
    [
        ([500, 502, 200], 3, True),
        ([429, 200], 2, True),
        ([500, 500, 500], 3, False),
        ([400], 1, False),
        (["refused", "refused", 200], 3, True),
        (["timeout", 200], 1, False),  # a timeout is not retried
        (["timeout-reason", 200], 1, False),
    ],
)
def test_post_json_retries_only_what_can_heal(monkeypatch, answers, calls, ok):
    import urllib.error
    import urllib.request

    seen: list[Any] = []

    def urlopen(request: Any, timeout: float) -> _Response:
        seen.append((request.full_url, request.get_method(), request.data, request.headers, timeout))
        answer = answers[len(seen) - 1]
        if answer == "refused":
            raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
        if answer == "timeout":
            raise TimeoutError("timed out")
        if answer == "timeout-reason":
            raise urllib.error.URLError(TimeoutError("timed out"))
        if answer != 200:
            raise _http_error(answer)
        return _Response()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(alert_channels.time, "sleep", lambda _: None)
    s = get_settings({"MLOPS_ALERT_TIMEOUT_SECONDS": "3"}).alerts
    target = HttpTarget("https://hooks.example.com/a", {"X-Token": "t"}, ("u", "p"))
    if ok:
        alerts.post_json(target, {"a": 1}, s)
    else:
        with pytest.raises(DeliveryError):
            alerts.post_json(target, {"a": 1}, s)
    assert len(seen) == calls
    url, method, data, headers, timeout = seen[0]
    assert (url, method, json.loads(data), timeout) == ("https://hooks.example.com/a", "POST", {"a": 1}, 3.0)
    assert headers["Content-type"] == "application/json" and headers["X-token"] == "t" and headers["Authorization"].startswith("Basic ")


def test_a_timed_out_destination_is_skipped_for_a_while(monkeypatch):
    import urllib.request

    calls: list[str] = []

    def urlopen(request: Any, timeout: float) -> _Response:
        calls.append(request.full_url)
        if "slow" in request.full_url:
            raise TimeoutError("timed out")
        return _Response()

    clock = {"t": 1000.0}
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(alert_channels.time, "monotonic", lambda: clock["t"])
    s = get_settings({}).alerts
    slow, fast = HttpTarget("https://slow.example.com/a"), HttpTarget("https://fast.example.com/a")
    with pytest.raises(DeliveryError, match="TimeoutError"):
        alerts.post_json(slow, {}, s)
    with pytest.raises(DeliveryError, match="skipped: it timed out less than 60 s ago"):
        alerts.post_json(slow, {}, s)
    alerts.post_json(fast, {}, s)  # other destinations are unaffected
    assert calls == ["https://slow.example.com/a", "https://fast.example.com/a"]
    clock["t"] += 61
    with pytest.raises(DeliveryError, match="TimeoutError"):
        alerts.post_json(slow, {}, s)
    assert len(calls) == 3


# -- connections ----------------------------------------------------------------------------------
def _conn(**kw: Any) -> SimpleNamespace:
    base = {"host": None, "port": None, "login": None, "password": None, "schema": None, "extra_dejson": {}}
    return SimpleNamespace(**{**base, **kw})


def test_targets_from_airflow_connections(monkeypatch):
    conns = {
        "hook": _conn(host="https://alerts.example.com/in", login="loop", password="pw", extra_dejson={"headers": {"X-Token": "t"}}),
        "hook_extra": _conn(host="alerts.example.com", extra_dejson={"url": "https://alerts.example.com/x"}),
        "hook_bad": _conn(host="alerts.example.com"),
        "slack_token": _conn(password="T000/B000/XXXX"),
        "slack_url": _conn(password="https://hooks.slack.com/services/T1/B1/Y"),
        "slack_host": _conn(host="https://slack.internal/services/", password="T2/B2/Z"),
        "smtp": _conn(host="mail.example.com", login="u", password="p", extra_dejson={"from_email": "loop@example.com"}),
        "smtp_plain": _conn(host="mail.example.com", port=2525, extra_dejson={"disable_ssl": "true", "disable_tls": True}),
        "smtp_starttls": _conn(host="mail.example.com", extra_dejson={"disable_ssl": True}),
    }
    monkeypatch.setattr(alert_channels, "_airflow_connection", lambda conn_id: conns[conn_id])

    def s(**env: str):
        return get_settings(env).alerts

    hook = alerts.webhook_target(s(MLOPS_ALERT_WEBHOOK_CONN_ID="hook", MLOPS_ALERT_WEBHOOK_URL="https://ignored.example.com"))
    assert (hook.url, hook.headers, hook.auth) == ("https://alerts.example.com/in", {"X-Token": "t"}, ("loop", "pw"))
    assert alerts.webhook_target(s(MLOPS_ALERT_WEBHOOK_CONN_ID="hook_extra")).url == "https://alerts.example.com/x"
    with pytest.raises(DeliveryError, match="no webhook URL"):
        alerts.webhook_target(s(MLOPS_ALERT_WEBHOOK_CONN_ID="hook_bad"))
    assert alerts.slack_target(s(MLOPS_ALERT_SLACK_CONN_ID="slack_token")).url == "https://hooks.slack.com/services/T000/B000/XXXX"
    assert alerts.slack_target(s(MLOPS_ALERT_SLACK_CONN_ID="slack_url")).url == "https://hooks.slack.com/services/T1/B1/Y"
    assert alerts.slack_target(s(MLOPS_ALERT_SLACK_CONN_ID="slack_host")).url == "https://slack.internal/services/T2/B2/Z"
    smtp = alerts.smtp_server(s(MLOPS_ALERT_SMTP_CONN_ID="smtp"))
    assert (smtp.host, smtp.port, smtp.tls, smtp.user, smtp.password, smtp.sender) == (
        "mail.example.com",
        465,
        "ssl",
        "u",
        "p",
        "loop@example.com",
    )
    plain = alerts.smtp_server(s(MLOPS_ALERT_SMTP_CONN_ID="smtp_plain"))
    assert (plain.port, plain.tls, plain.sender) == (2525, "none", "mlops-loop@localhost")
    assert alerts.smtp_server(s(MLOPS_ALERT_SMTP_CONN_ID="smtp_starttls")).tls == "starttls"
    env_smtp = alerts.smtp_server(s(MLOPS_ALERT_SMTP_HOST="mx", MLOPS_ALERT_SMTP_TLS="ssl", MLOPS_ALERT_SMTP_USER="me"))
    assert (env_smtp.host, env_smtp.port, env_smtp.tls, env_smtp.user) == ("mx", 465, "ssl", "me")


# -- settings ---------------------------------------------------------------------------------------
def test_alert_settings_defaults_and_parsing():
    a = get_settings({}).alerts
    assert (a.min_severity, a.cooloff_minutes, a.timeout_seconds, a.retries) == ("warning", 360.0, 5.0, 2)
    assert (a.webhook_url, a.slack_webhook_url, a.email_to, a.smtp_port, a.smtp_tls) == (None, None, (), 587, "starttls")
    assert a.airflow_url == "http://127.0.0.1:8080"
    b = get_settings(
        {
            "MLOPS_ALERT_MIN_SEVERITY": "CRITICAL",
            "MLOPS_ALERT_COOLOFF_MINUTES": "0.5",
            "MLOPS_ALERT_EMAIL_TO": " a@x.org,, b@x.org ",
            "MLOPS_ALERT_SMTP_TLS": "none",
            "MLOPS_AIRFLOW_PORT": "9090",
            "MLOPS_ALERT_RETRIES": "0",
        }
    ).alerts
    assert (b.min_severity, b.cooloff_minutes, b.email_to, b.smtp_port, b.retries) == ("critical", 0.5, ("a@x.org", "b@x.org"), 25, 0)
    assert b.airflow_url == "http://127.0.0.1:9090"
    assert get_settings({"MLOPS_ALERT_AIRFLOW_URL": "https://airflow.example.com/"}).alerts.airflow_url == "https://airflow.example.com"


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"MLOPS_ALERT_MIN_SEVERITY": "loud"}, "MLOPS_ALERT_MIN_SEVERITY must be one of info, warning, critical"),
        ({"MLOPS_ALERT_COOLOFF_MINUTES": "-1"}, "MLOPS_ALERT_COOLOFF_MINUTES must be at least 0"),
        ({"MLOPS_ALERT_COOLOFF_MINUTES": "soon"}, "MLOPS_ALERT_COOLOFF_MINUTES must be a number"),
        ({"MLOPS_ALERT_RETRIES": "1.5"}, "MLOPS_ALERT_RETRIES must be a whole number"),
        ({"MLOPS_ALERT_SMTP_TLS": "maybe"}, "MLOPS_ALERT_SMTP_TLS must be one of starttls, ssl, none"),
        ({"MLOPS_ALERT_SMTP_PORT": "99999"}, "MLOPS_ALERT_SMTP_PORT"),
    ],
)
def test_bad_alert_settings_are_clear_errors(env, match):
    with pytest.raises(ValueError, match=match):
        get_settings(env)


def test_secrets_stay_out_of_errors_and_repr():
    with pytest.raises(ValueError) as err:
        get_settings({"MLOPS_ALERT_SLACK_WEBHOOK_URL": "hooks.slack.com/services/T/B/SECRET"})
    assert "SECRET" not in str(err.value) and "MLOPS_ALERT_SLACK_WEBHOOK_URL" in str(err.value)
    s = get_settings(
        {
            "MLOPS_ALERT_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/SECRET",
            "MLOPS_ALERT_WEBHOOK_URL": "https://h.example.com/?token=SECRET",
            "MLOPS_ALERT_SMTP_PASSWORD": "SECRET",
        }
    )
    assert "SECRET" not in repr(s) and "SECRET" not in repr(s.alerts)
    assert configured_channels(s.alerts) == ["webhook", "slack"]
