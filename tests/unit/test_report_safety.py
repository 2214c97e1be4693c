"""Reports never carry raw request strings, and the loop plugin serves report files isolated from
Airflow's origin (issue 17, item 3: a category sent to /predict landed unescaped inside the
Evidently report's <script>, served as text/html on Airflow's origin).

The report's rendering under the plugin's Content-Security-Policy was checked in headless
Chromium (the same charts, no CSP violation); the page behind Airflow's login is in
tests/e2e/test_demo_live.py."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from include.mlops.steps.monitoring.reports import MAX_CATEGORY_CHARS, UNKNOWN_CATEGORY, drift_report, reportable_categories

pytestmark = pytest.mark.unit

PAYLOAD = "</script><script>alert(1)</script>"


def _frame(spec, n: int, extra: dict[str, list[str]] | None = None, seed: int = 0) -> pd.DataFrame:
    """``n`` rows of the spec's features: categories from the spec's lists (or ``extra``), numbers in range."""
    rng = np.random.default_rng(seed)
    data = {}
    for f in spec.features:
        if f.type == "categorical":
            data[f.name] = rng.choice((extra or {}).get(f.name, f.categories[:3]), n).astype(object)
        else:
            lo, hi = (f.min if f.min is not None else 0), (f.max if f.max is not None else 10)
            data[f.name] = rng.uniform(lo, hi, n)
    return pd.DataFrame(data)


def test_a_report_from_a_window_with_a_script_category_does_not_contain_it(spec):
    ref = _frame(spec, 300)
    cat = next(f for f in spec.features if f.type == "categorical")
    cur = _frame(spec, 300, {cat.name: [*cat.categories[:2], PAYLOAD, "x" * 5000]}, seed=1)
    html = drift_report(spec, cur, ref).get_html_str(as_iframe=False)
    assert PAYLOAD not in html and "alert(1)" not in html and "x" * 100 not in html
    assert UNKNOWN_CATEGORY in html  # the invented categories are reported as one unknown category
    assert cat.categories[0] in html  # the known ones as themselves


def test_only_known_plain_categories_survive(spec):
    cat = next(f for f in spec.features if f.type == "categorical")
    known, declared_only = cat.categories[0], cat.categories[-1]
    long_known = "y" * (MAX_CATEGORY_CHARS + 1)
    ref = pd.DataFrame({cat.name: [known, "<b>", long_known, None, "TRAINING-ONLY"]}, dtype=object)
    cur = pd.DataFrame(
        {cat.name: [known, declared_only, "TRAINING-ONLY", "<b>", long_known, "NEW", "a\x00b", "\ud800", "\u2028", None]},
        dtype=object,
    )
    reportable_categories(spec, cur, ref)
    u = UNKNOWN_CATEGORY
    assert list(cur[cat.name]) == [known, declared_only, "TRAINING-ONLY", u, u, u, u, u, u, None]
    # markup and over-long values are unknown even in the reference (training data is not trusted either)
    assert list(ref[cat.name]) == [known, u, u, None, "TRAINING-ONLY"]


def test_numeric_columns_are_left_alone(spec):
    num = next(f for f in spec.features if f.type != "categorical")
    cur, ref = pd.DataFrame({num.name: [1.0, 2.0]}), pd.DataFrame({num.name: [3.0, 4.0]})
    reportable_categories(spec, cur, ref)
    assert list(cur[num.name]) == [1.0, 2.0] and list(ref[num.name]) == [3.0, 4.0]


# -- the plugin's /files ------------------------------------------------------------------------------
@pytest.fixture
def plugin_client(tmp_path, monkeypatch):
    """The plugin's app with Airflow's authentication stubbed out and a lake under ``tmp_path``."""
    from plugins import mlops_loop

    (tmp_path / "reports").mkdir()
    monkeypatch.setattr(mlops_loop, "_runtime", lambda: types.SimpleNamespace(lake=types.SimpleNamespace(root=tmp_path)))
    mlops_loop.app.dependency_overrides[mlops_loop._authenticated] = lambda: "tester"
    try:
        yield TestClient(mlops_loop.app), tmp_path / "reports"
    finally:
        mlops_loop.app.dependency_overrides.clear()


def _csp(resp) -> dict[str, str]:
    directives = [d.strip() for d in resp.headers["content-security-policy"].split(";") if d.strip()]
    return {d.split()[0]: " ".join(d.split()[1:]) for d in directives}


def test_an_html_report_is_sandboxed_away_from_airflows_origin(plugin_client):
    client, reports = plugin_client
    (reports / "r.html").write_text(f"<html><body><script>var x = '{PAYLOAD}';</script></body></html>")
    resp = client.get("/files", params={"path": str(reports / "r.html")})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert resp.headers["x-content-type-options"] == "nosniff"
    csp = _csp(resp)
    sandbox = csp["sandbox"].split()
    assert "allow-scripts" in sandbox  # Evidently's report is drawn by its inline scripts
    assert "allow-same-origin" not in sandbox and "allow-top-navigation" not in sandbox
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'none'"
    assert csp["script-src"] == "'unsafe-inline'"  # nothing from elsewhere, no eval


def test_a_json_summary_runs_nothing_and_other_files_are_downloads(plugin_client):
    client, reports = plugin_client
    (reports / "s.json").write_text('{"a": 1}')
    (reports / "notes.svg").write_text("<svg onload='alert(1)'/>")
    resp = client.get("/files", params={"path": str(reports / "s.json")})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.headers["x-content-type-options"] == "nosniff"
    csp = _csp(resp)
    assert csp["sandbox"] == "" and csp["default-src"] == "'none'"
    resp = client.get("/files", params={"path": str(reports / "notes.svg")})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-disposition"].startswith("attachment")
    assert resp.headers["x-content-type-options"] == "nosniff" and _csp(resp)["sandbox"] == ""


def test_files_outside_the_reports_folder_are_not_served(plugin_client, tmp_path):
    client, reports = plugin_client
    (tmp_path / "secret.txt").write_text("no")
    assert client.get("/files", params={"path": str(tmp_path / "secret.txt")}).status_code == 404
    assert client.get("/files", params={"path": str(reports / ".." / "secret.txt")}).status_code == 404
