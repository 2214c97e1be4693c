"""The loop plugin's report files in headless Chromium: an Evidently drift report still draws its
charts under the plugin's Content-Security-Policy (it needs its inline scripts), and a script in a
report file runs in an opaque origin, without Airflow's cookies or network access (issue 17, item 3).

The plugin's app is served by uvicorn with Airflow's authentication stubbed out (the login itself is
tested in tests/e2e/test_demo_live.py). Needs Debian's chromium (skipped without it)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import types
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, reports folder) of the plugin's app on loopback."""
    import uvicorn

    from plugins import mlops_loop

    root = tmp_path_factory.mktemp("lake")
    (root / "reports").mkdir()
    mlops_loop.app.dependency_overrides[mlops_loop._authenticated] = lambda: "tester"
    original = mlops_loop._runtime
    mlops_loop._runtime = lambda: types.SimpleNamespace(lake=types.SimpleNamespace(root=root))  # type: ignore[assignment]
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(mlops_loop.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}", root / "reports"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        mlops_loop._runtime = original  # type: ignore[assignment]
        mlops_loop.app.dependency_overrides.clear()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str):
    context = browser.new_context()
    context.add_cookies([{"name": "_token", "value": "airflow-session", "url": url.split("/files")[0]}])
    page = context.new_page()
    messages: list[str] = []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    return context, page, messages


def test_an_evidently_report_still_draws_its_charts(served, browser, spec):
    from include.mlops.steps.monitoring.reports import drift_report

    base, reports = served
    rng = np.random.default_rng(0)

    def frame(cats: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {f.name: rng.choice(cats, 200).astype(object) if f.type == "categorical" else rng.uniform(0, 10, 200) for f in spec.features}
        )

    path = reports / "drift.html"
    drift_report(spec, frame(["AA", "UA", "DL"]), frame(["AA", "UA", "</script><script>alert(1)</script>"])).save_html(str(path))
    context, page, messages = _open(browser, base)
    try:
        response = page.goto(f"{base}/files?path={quote(str(path))}")
        assert response is not None and "sandbox allow-scripts" in response.headers["content-security-policy"]
        page.wait_for_selector(".js-plotly-plot", timeout=30_000)
        assert page.locator(".js-plotly-plot").count() >= 5  # one distribution plot per judged column, and more
        assert "Drift in column 'carrier'" in page.inner_text("body")
        assert not [m for m in messages if "Content Security Policy" in m or m.startswith("pageerror")], messages
    finally:
        context.close()


def test_a_script_in_a_report_file_cannot_reach_airflow(served, browser):
    base, reports = served
    probe = """<html><body><pre id="out">pending</pre><script>
      const out = [];
      try { out.push('cookie:' + document.cookie); } catch (e) { out.push('cookie:blocked'); }
      try { localStorage.setItem('x', '1'); out.push('storage:open'); } catch (e) { out.push('storage:blocked'); }
      out.push('origin:' + self.origin);
      fetch('/files?path=x').then(() => { document.title = 'fetched'; }, () => { document.title = 'fetch-blocked'; });
      document.getElementById('out').textContent = out.join(' ');
    </script></body></html>"""
    (reports / "probe.html").write_text(probe)
    context, page, _ = _open(browser, base)
    try:
        page.goto(f"{base}/files?path={quote(str(reports / 'probe.html'))}")
        page.wait_for_function("document.title !== ''", timeout=10_000)
        text = page.inner_text("#out")
        assert "cookie:blocked" in text and "storage:blocked" in text and "origin:null" in text, text  # scripts run, sandboxed
        assert page.title() == "fetch-blocked"
    finally:
        context.close()
