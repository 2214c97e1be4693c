"""One model's status page, rendered from a real (SQLite) ops store with MLflow and serving unreachable:
who serves, the ledger, decisions with reason codes, quarantine and alerts, all escaped; report
links never leave the lake's reports folder. The overview of several models is in
test_status_overview.py; the page behind Airflow's login, in headless Chromium, is tested in
tests/e2e/test_demo_live.py."""

from __future__ import annotations

import json

import pytest

from include.mlops.adapters.alerts import raise_alert
from include.mlops.adapters.store import Decision
from include.mlops.ui.status_page import as_json, gather, render, safe_report_path

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _mlflow_down_fast(monkeypatch):
    """MLflow is not running here: the page says so after one refused connection, not after retries."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _ledger(rt, alias, frm, to, action, reason, n):
    rt.store.append_ledger(
        model=rt.model_name,
        alias=alias,
        action=action,
        from_version=frm,
        to_version=to,
        strategy="canary" if alias == "challenger" else "direct",
        reason=reason,
        actor="test",
        op_key=f"op-{n}",
        dag_id="deploy_validated_model",
        run_id=f"manual__{n}",
    )


def test_the_page_tells_who_serves_what_was_decided_and_what_is_wrong(runtime):
    rt = runtime
    _ledger(rt, "champion", None, "1", "set", "first model", 1)
    _ledger(rt, "challenger", None, "2", "set", "canary of v2", 2)
    _ledger(rt, "challenger", "2", None, "remove", "rolled back: error rate <script>alert(1)</script>", 3)
    rt.store.record_decision(
        rt.model_name, "early_window", "rollback", "error_rate_above_champion", subject="v2", dag_id="check_early_window", run_id="r1"
    )
    bid = rt.store.create_batch(rt.model_name, "outcomes_2013-02-11.csv", "abc", "ingest_outcomes", "r2")
    rt.store.quarantine_batch(
        bid,
        rt.model_name,
        "outcomes_2013-02-11.csv",
        [{"code": "temperature_out_of_range", "detail": "temp max 31"}],
        "/nowhere/outcomes_2013-02-11.csv",
        None,
        Decision(rt.model_name, "ingest", "quarantined", "temperature_out_of_range", subject="outcomes_2013-02-11.csv"),
    )
    raise_alert(
        rt.store, rt.model_name, severity="critical", kind="rollback", dedupe_key="rb-2", message="v2 rolled back by the early window"
    )

    status = gather(rt)
    assert status.champion is not None and status.champion["to_version"] == "1"
    assert status.challenger is None  # removed: the last challenger row clears it
    assert "error" in (status.serving or {})  # serving is not running here: said, not hidden
    assert status.counts["quarantined_batches"] == 1 and status.counts["open_alerts"] == 1

    page = render(status)
    assert "v1" in page and "first model" in page
    assert "error_rate_above_champion" in page and "temperature_out_of_range" in page
    assert "v2 rolled back by the early window" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "outcomes_2013-02-11.csv" in page
    assert "check_early_window" in page  # the decision links to its Airflow run
    assert "default model" in page and "/dags?tags=model%3Aflights_late_arrival" in page  # its DAGs, by tag
    json.dumps(as_json(status))  # the JSON view serialises every field


def test_an_empty_loop_renders_and_says_so(runtime):
    page = render(gather(runtime))
    assert "no alias change yet" in page and "no batch quarantined" in page and "no open alert" in page


def test_report_links_stay_inside_the_reports_folder(runtime, tmp_path):
    rt = runtime
    inside = rt.lake.root / "reports" / "flights" / "summary.json"
    inside.parent.mkdir(parents=True)
    inside.write_text("{}")
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    assert safe_report_path(rt, str(inside)) == inside.resolve()
    assert safe_report_path(rt, str(outside)) is None
    assert safe_report_path(rt, str(inside.parent / ".." / ".." / ".." / "ops.db")) is None
    assert safe_report_path(rt, str(inside.parent / "missing.json")) is None


def test_the_page_shows_the_realized_value_per_month_as_stored_by_monitoring(runtime):
    from include.mlops.steps.value import LoopValue, MonthValue, overall, write_value

    rt = runtime
    assert "not computed yet" in render(gather(rt))
    months = [MonthValue("2013-02", 4000, 0.66, 0.65), MonthValue("2013-03", 5000, 0.63, 0.64)]
    write_value(rt.lake, LoopValue(rt.model_name, "1", 9000, months, overall(months), None, ["1", "3"]))
    status = gather(rt)
    assert status.value is not None and status.value["overall"]["served"] == 0.645
    page = render(status)
    assert "Realized value" in page and "first champion v1" in page
    assert "2013-02" in page and "0.6600" in page and "+0.0100" in page and "-0.0100" in page
    assert "0.6450" in page and "scheduled, every 7 days" not in page  # no scheduled column stored
    json.dumps(as_json(status))

    # the end of `make demo` adds the scheduled-retraining column
    months = [MonthValue("2013-02", 4000, 0.66, 0.65, 0.67, 0.69), MonthValue("2013-03", 5000, 0.63, 0.64, 0.68, 0.70)]
    plan = {"every_days": 7, "retrains": 8, "retrains_newest": 8}
    write_value(rt.lake, LoopValue(rt.model_name, "1", 9000, months, overall(months), plan, ["1"]))
    page = render(gather(rt))
    assert "scheduled, every 7 days" in page and "0.6750" in page
    assert "every 7 days, newest labels" in page and "0.6950" in page

    write_value(rt.lake, LoopValue(rt.model_name, "1", 12, note="too few labelled served rows to compare (12; at least 200 needed)"))
    assert "too few labelled served rows to compare" in render(gather(rt))
