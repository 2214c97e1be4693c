"""Alert delivery end to end: real receivers on loopback (an HTTP server for the webhook and Slack, a
minimal SMTP server), configured through the real settings, alerts raised through the real ops store,
and the task-failure notifier run by Airflow itself (``dag.test()`` of a tiny DAG whose task fails)."""

from __future__ import annotations

import email
import json
import socket
import socketserver
import threading
import time
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from include.mlops.adapters.alerts import deliver_pending, raise_alert, resolve_alerts

pytestmark = pytest.mark.integration


# -- receivers --------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server: Any = self.server
        server.received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        self.send_response(server.status)
        self.end_headers()
        self.wfile.write(b"ok" if server.status < 300 else b"receiver is down")

    def log_message(self, *args: Any) -> None:
        pass


class Receiver:
    """A webhook receiver on a free loopback port; ``status`` is what it answers."""

    def __init__(self) -> None:
        self.server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.received = []
        self.server.status = 200
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.server.received

    def bodies(self, path_prefix: str) -> list[dict[str, Any]]:
        return [r["json"] for r in self.received if r["path"].startswith(path_prefix)]

    def set_status(self, status: int) -> None:
        self.server.status = status

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, MAIL, RCPT, DATA, QUIT."""

    def handle(self) -> None:
        server: Any = self.server
        self.wfile.write(b"220 test-smtp ESMTP\r\n")
        envelope: dict[str, Any] = {"from": None, "to": []}
        lines: list[bytes] | None = None
        while line := self.rfile.readline():
            if lines is not None:
                if line in (b".\r\n", b".\n"):
                    server.messages.append({**envelope, "message": email.message_from_bytes(b"".join(lines), policy=policy.default)})
                    envelope, lines = {"from": None, "to": []}, None
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                self.wfile.write(b"250 test-smtp\r\n")
            elif verb == b"MAIL":
                envelope["from"] = line.decode().split(":", 1)[1].strip()
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"RCPT":
                envelope["to"].append(line.decode().split(":", 1)[1].strip())
                self.wfile.write(b"250 ok\r\n")
            elif verb == b"DATA":
                lines = []
                self.wfile.write(b"354 end with .\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp_server():
    server: Any = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SMTPHandler)
    server.daemon_threads = True
    server.messages = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def channels(runtime, receiver, monkeypatch):
    """Webhook + Slack pointed at the receiver through the real settings; quick retries."""
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", receiver.url("/hook"))
    monkeypatch.setenv("MLOPS_ALERT_SLACK_WEBHOOK_URL", receiver.url("/slack/T000/B000/XXXX"))
    monkeypatch.setenv("MLOPS_ALERT_RETRIES", "1")
    monkeypatch.setenv("MLOPS_ALERT_TIMEOUT_SECONDS", "2")
    return runtime


def _raise(rt, key: str = "drift:temp", severity: str = "warning", **kw: Any):
    return raise_alert(
        rt.store,
        rt.model_name,
        severity=severity,  # type: ignore[arg-type]
        kind=kw.pop("kind", "drift"),
        dedupe_key=key,
        message=kw.pop("message", "temp drifted (PSI 0.41 > 0.2)"),
        payload=kw.pop("payload", {"psi": 0.41, "column": "temp"}),
        **kw,
    )


# -- webhook and Slack ------------------------------------------------------------------------
def test_one_delivery_per_incident_then_a_reminder_after_the_cooloff(channels, receiver, monkeypatch):
    rt = channels
    monkeypatch.setenv("MLOPS_ALERT_COOLOFF_MINUTES", "0.05")  # 3 s
    first = _raise(rt, links={"report": "http://127.0.0.1:8001/projects/x"})
    again = [_raise(rt), _raise(rt)]
    assert first.is_new and first.delivery == "delivered"
    assert [a.delivery for a in again] == ["cooling_off", "cooling_off"] and again[-1].count == 3
    (hook,) = receiver.bodies("/hook")
    (slack,) = receiver.bodies("/slack")
    assert set(hook) == {
        "schema",
        "event",
        "id",
        "model",
        "severity",
        "kind",
        "status",
        "message",
        "dedupe_key",
        "count",
        "first_seen",
        "last_seen",
        "payload",
        "links",
    }
    assert hook["event"] == "opened" and hook["id"] == first.id and hook["model"] == rt.model_name
    assert (hook["severity"], hook["kind"], hook["dedupe_key"], hook["count"]) == ("warning", "drift", "drift:temp", 1)
    assert hook["payload"] == {"psi": 0.41, "column": "temp"} and hook["links"] == {"report": "http://127.0.0.1:8001/projects/x"}
    assert hook["first_seen"].endswith("Z")
    assert slack["text"].startswith(":warning: WARNING") and "temp drifted" in slack["text"]
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "context", "section"]
    assert "<http://127.0.0.1:8001/projects/x|report>" in slack["blocks"][-1]["text"]["text"]

    time.sleep(3.2)
    reminder = _raise(rt)
    assert reminder.delivery == "delivered" and reminder.count == 4
    assert [b["event"] for b in receiver.bodies("/hook")] == ["opened", "reminder"]
    assert receiver.bodies("/hook")[-1]["count"] == 4
    assert _raise(rt).delivery == "cooling_off"  # the cool-off restarts at the reminder
    row = rt.store.get_alert(first.id)
    assert row["count"] == 5 and row["delivered_at"] is not None


def test_nothing_below_the_minimum_severity_but_the_store_keeps_it(channels, receiver, monkeypatch):
    rt = channels
    info = _raise(rt, key="no_change:r1", severity="info", kind="no_change")
    assert info.delivery == "below_min_severity" and receiver.received == []
    monkeypatch.setenv("MLOPS_ALERT_MIN_SEVERITY", "critical")
    assert _raise(rt, key="drift:humid").delivery == "below_min_severity"
    assert _raise(rt, key="rollback:v3", severity="critical", kind="model_rolled_back").delivery == "delivered"
    assert [b["kind"] for b in receiver.bodies("/hook")] == ["model_rolled_back"]
    assert {a["dedupe_key"] for a in rt.store.list_alerts(rt.model_name)} == {"no_change:r1", "drift:humid", "rollback:v3"}


def test_failing_receiver_never_raises_and_the_alert_waits_for_deliver_pending(channels, receiver):
    rt = channels
    receiver.set_status(500)
    alert = _raise(rt, severity="critical", kind="model_rolled_back", key="rollback:v7")
    assert alert.delivery == "failed"
    assert rt.store.get_alert(alert.id)["delivered_at"] is None
    # one try + MLOPS_ALERT_RETRIES=1 retry, per channel
    assert len(receiver.bodies("/hook")) == 2 and len(receiver.bodies("/slack")) == 2

    assert deliver_pending(rt.store, rt.model_name) == {"delivered": [], "failed": [alert.id]}
    receiver.set_status(200)
    receiver.received.clear()
    assert deliver_pending(rt.store, rt.model_name) == {"delivered": [alert.id], "failed": []}
    assert [b["event"] for b in receiver.bodies("/hook")] == ["opened"]
    assert rt.store.get_alert(alert.id)["delivered_at"] is not None
    assert deliver_pending(rt.store, rt.model_name) == {"delivered": [], "failed": []}


def test_a_black_holed_endpoint_costs_one_timeout_not_one_per_alert(channels, receiver, monkeypatch):
    """A socket that accepts connections and never answers: the first alert waits one timeout, the
    next ones skip that destination (and stay pending) instead of waiting again."""
    from include.mlops.adapters import alert_channels

    monkeypatch.setattr(alert_channels, "_timed_out_until", {})
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    try:
        monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{hole.getsockname()[1]}/hook")
        monkeypatch.setenv("MLOPS_ALERT_TIMEOUT_SECONDS", "1")
        started = time.monotonic()
        first = _raise(channels, key="drift:a")
        second = _raise(channels, key="drift:b")
        elapsed = time.monotonic() - started
    finally:
        hole.close()
    assert (first.delivery, second.delivery) == ("failed", "failed")
    assert 1 <= elapsed < 3, elapsed
    assert len(receiver.bodies("/slack")) == 2  # Slack still took both (at least once: the retry resends)


def test_client_error_is_not_retried(channels, receiver):
    receiver.set_status(404)
    assert _raise(channels).delivery == "failed"
    assert len(receiver.bodies("/hook")) == 1


def test_refused_connection_is_bounded_and_the_next_occurrence_delivers(channels, receiver, monkeypatch):
    rt = channels
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{_closed_port()}/hook")
    monkeypatch.delenv("MLOPS_ALERT_SLACK_WEBHOOK_URL")
    started = time.monotonic()
    first = _raise(rt)
    assert first.delivery == "failed" and time.monotonic() - started < 5
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", receiver.url("/hook"))
    again = _raise(rt)  # a repeat of a never-delivered alert is delivered as its opening
    assert again.delivery == "delivered" and again.id == first.id
    assert [(b["event"], b["count"]) for b in receiver.bodies("/hook")] == [("opened", 2)]


def test_a_successful_delivery_sends_what_a_failure_left_behind(channels, receiver):
    rt = channels
    receiver.set_status(503)
    left = _raise(rt, key="drift:temp")
    assert left.delivery == "failed"
    receiver.set_status(200)
    receiver.received.clear()
    assert _raise(rt, key="drift:wind").delivery == "delivered"
    assert [b["dedupe_key"] for b in receiver.bodies("/hook")] == ["drift:wind", "drift:temp"]


def test_resolve_ends_the_incident_and_the_next_one_is_new(channels, receiver):
    rt = channels
    first = _raise(rt, key="drift:temp")
    _raise(rt, key="drift:humid", severity="info")  # stored, never delivered
    assert sorted(resolve_alerts(rt.store, rt.model_name, dedupe_prefix="drift:")) == sorted([first.id, first.id + 1])
    assert [b["event"] for b in receiver.bodies("/hook")] == ["opened", "resolved"]  # no notice for the undelivered one
    assert receiver.bodies("/slack")[-1]["text"].startswith(":white_check_mark: Resolved:")
    second = _raise(rt, key="drift:temp")
    assert second.is_new and second.id != first.id and second.delivery == "delivered"


def test_webhook_from_an_airflow_connection(runtime, receiver, monkeypatch):
    """MLOPS_ALERT_WEBHOOK_CONN_ID resolves through Airflow's own connection lookup (here the
    AIRFLOW_CONN_<ID> environment backend): URL in host, extra headers, basic auth from login."""
    conn = {
        "conn_type": "http",
        "host": receiver.url("/conn-hook"),
        "login": "loop",
        "password": "s3cret",
        "extra": {"headers": {"X-Token": "abc"}},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS_WEBHOOK", json.dumps(conn))
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_CONN_ID", "mlops_alerts_webhook")
    assert _raise(runtime).delivery == "delivered"
    (request,) = receiver.received
    assert request["path"] == "/conn-hook" and request["headers"]["X-Token"] == "abc"
    assert request["headers"]["Authorization"].startswith("Basic ")

    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_CONN_ID", "no_such_connection")
    missing = _raise(runtime, key="drift:other")
    assert missing.delivery == "failed" and runtime.store.get_alert(missing.id)["delivered_at"] is None


# -- email ------------------------------------------------------------------------------------
def test_email_through_a_local_smtp_server(runtime, smtp_server, monkeypatch):
    monkeypatch.setenv("MLOPS_ALERT_EMAIL_TO", "oncall@example.com, ml-team@example.com")
    monkeypatch.setenv("MLOPS_ALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MLOPS_ALERT_SMTP_PORT", str(smtp_server.server_address[1]))
    monkeypatch.setenv("MLOPS_ALERT_SMTP_TLS", "none")
    monkeypatch.setenv("MLOPS_ALERT_SMTP_FROM", "loop@example.com")
    alert = _raise(
        runtime, severity="critical", kind="early_window_breach", key="early_window_breach:4", message="v4 breached its early window"
    )
    assert alert.delivery == "delivered"
    (mail,) = smtp_server.messages
    assert mail["to"] == ["<oncall@example.com>", "<ml-team@example.com>"] and mail["from"] == "<loop@example.com>"
    msg = mail["message"]
    assert msg["Subject"] == f"[mlops-loop] CRITICAL {runtime.model_name}: early_window_breach - v4 breached its early window"
    assert msg["X-Mlops-Alert-Id"] == str(alert.id)
    body = msg.get_content()
    assert "dedupe key: early_window_breach:4" in body and '"psi": 0.41' in body


def test_email_to_a_dead_smtp_server_fails_cleanly(runtime, monkeypatch):
    monkeypatch.setenv("MLOPS_ALERT_EMAIL_TO", "oncall@example.com")
    monkeypatch.setenv("MLOPS_ALERT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MLOPS_ALERT_SMTP_PORT", str(_closed_port()))
    monkeypatch.setenv("MLOPS_ALERT_SMTP_TLS", "none")
    monkeypatch.setenv("MLOPS_ALERT_RETRIES", "0")
    alert = _raise(runtime)
    assert alert.delivery == "failed" and runtime.store.get_alert(alert.id)["delivered_at"] is None


# -- the task-failure notifier, run by Airflow ---------------------------------------------------
def _probe_dag():
    import pendulum
    from airflow.sdk import DAG, task

    from include.mlops.adapters.notifiers import LoopFailureNotifier, LoopRecoveryNotifier

    with DAG(
        dag_id="alert_probe",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params={"fail": True},
        default_args={"retries": 0, "on_failure_callback": LoopFailureNotifier(), "on_success_callback": LoopRecoveryNotifier()},
    ) as dag:

        @task
        def score_batch(params: dict[str, Any] | None = None) -> str:
            if params and params["fail"]:
                raise RuntimeError("feature store unreachable")
            return "ok"

        score_batch()
    return dag


@pytest.fixture
def probe_dag(airflow_db, tmp_path):
    """The probe DAG, parsed from a file and written to the metadata DB as the dag processor would
    (dag.test() runs only serialized DAGs; dags/ is the project's, so the file lives in tmp_path)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    path = tmp_path / "alert_probe.py"
    path.write_text(
        "# airflow DAG file for the alert tests\nfrom tests.integration.test_alert_delivery import _probe_dag\n\ndag = _probe_dag()\n"
    )
    bag = DagBag(dag_folder=str(path), bundle_path=tmp_path)
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag("alert_probe")


def test_failed_task_becomes_one_delivered_alert_and_success_resolves_it(probe_dag, channels, receiver, monkeypatch):
    rt = channels
    monkeypatch.setenv("MLOPS_ALERT_AIRFLOW_URL", "https://airflow.example.com/")
    dag = probe_dag
    failed = dag.test(run_conf={"fail": True})
    assert failed.state == "failed"

    (alert,) = [a for a in rt.store.list_alerts(rt.model_name) if a["kind"] == "task_failed"]
    assert alert["dedupe_key"] == "task_failed:alert_probe.score_batch" and alert["severity"] == "critical"
    (hook,) = receiver.bodies("/hook")
    assert hook["event"] == "opened" and hook["kind"] == "task_failed"
    assert hook["message"].startswith("alert_probe.score_batch failed (try 1 of 1): RuntimeError: feature store unreachable")
    assert hook["payload"]["run_id"] == failed.run_id and hook["payload"]["try_number"] == 1
    assert "feature store unreachable" in hook["payload"]["traceback"]
    from urllib.parse import quote

    run = quote(failed.run_id, safe="")
    assert hook["links"] == {
        "log": f"https://airflow.example.com/dags/alert_probe/runs/{run}/tasks/score_batch?try_number=1",
        "dag_run": f"https://airflow.example.com/dags/alert_probe/runs/{run}",
    }

    again = dag.test(run_conf={"fail": True})  # same incident: counted, not re-sent
    assert again.state == "failed"
    assert len(receiver.bodies("/hook")) == 1
    assert rt.store.get_alert(alert["id"])["count"] == 2

    healed = dag.test(run_conf={"fail": False})
    assert healed.state == "success"
    assert rt.store.get_alert(alert["id"])["status"] == "resolved"
    assert [b["event"] for b in receiver.bodies("/hook")] == ["opened", "resolved"]


def test_notifier_never_raises_even_when_the_ops_store_is_unusable(state, monkeypatch, tmp_path, caplog, capsys):
    """Called the way Airflow calls it (one context argument), with a store that cannot open."""
    from types import SimpleNamespace

    import pendulum
    from airflow.sdk import DAG

    from include.mlops.adapters.notifiers import LoopFailureNotifier

    (tmp_path / "not-a-dir").write_text("a file where the ops store's folder should be")
    monkeypatch.setenv("MLOPS_OPS_DB_URL", f"sqlite:///{tmp_path / 'not-a-dir' / 'ops.db'}")
    dag = DAG("d", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="manual__1", map_index=-1, try_number=2, max_tries=1)
    context = {"dag": dag, "ti": ti, "task_instance": ti, "run_id": "manual__1", "exception": ValueError("boom")}
    LoopFailureNotifier()(context)  # logs, does not raise
    captured = capsys.readouterr()
    assert "could not record the task failure as an alert" in caplog.text + captured.out + captured.err


def _context(task_id: str = "ingest_batches", run_id: str = "scheduled__2026-03-01T00:00:00+00:00", map_index: int = -1, exc: Any = None):
    from types import SimpleNamespace

    ti = SimpleNamespace(dag_id="ingest_outcomes", task_id=task_id, run_id=run_id, map_index=map_index, try_number=3, max_tries=2)
    return {"ti": ti, "task_instance": ti, "run_id": run_id, "exception": exc}


def test_mapped_failures_share_one_alert_and_only_the_failed_instance_resolves_it(channels, receiver):
    from include.mlops.adapters.notifiers import record_task_failure, record_task_success

    rt = channels
    first = record_task_failure(_context(map_index=1, exc=OSError("disk full")))
    second = record_task_failure(_context(map_index=3, exc=OSError("disk full")))
    assert first.id == second.id and second.count == 2 and second.delivery == "cooling_off"
    (hook,) = receiver.bodies("/hook")
    assert hook["links"]["log"].endswith("/tasks/ingest_batches/mapped/1?try_number=3")
    assert hook["message"] == "ingest_outcomes.ingest_batches failed (try 3 of 3): OSError: disk full"

    assert record_task_success(_context(map_index=0)) == []  # a sibling of the same run succeeding proves nothing
    assert record_task_success(_context(map_index=3)) == [first.id]
    assert rt.store.get_alert(first.id)["status"] == "resolved"


def test_a_failure_that_already_alerted_is_recorded_but_not_sent_twice(channels, receiver):
    from include.mlops.adapters.alerts import mark_alerted
    from include.mlops.adapters.notifiers import record_task_failure

    rt = channels
    own = _raise(rt, key="training_refused:too_few_rows", kind="training_refused")
    exc = mark_alerted(RuntimeError("training refused (too_few_rows)"), own)
    failure = record_task_failure(_context(task_id="train", exc=exc))
    assert failure.delivery == "not_requested"
    assert [b["kind"] for b in receiver.bodies("/hook")] == ["training_refused"]
    assert rt.store.get_alert(failure.id)["payload"]["mlops_alert_id"] == own.id


def test_a_task_that_died_without_an_exception(channels, receiver):
    from include.mlops.adapters.notifiers import record_task_failure

    alert = record_task_failure(_context(task_id="judge"))
    assert alert.delivery == "delivered"
    assert receiver.bodies("/hook")[0]["message"].endswith("failure: no exception reported (killed, timed out or crashed)")
