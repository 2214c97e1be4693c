"""Screenshots of the running loop for the README: the loop status page, the Airflow asset graph,
MLflow's registry and the Evidently dashboard, taken in headless Debian Chromium (playwright
drives it; no browser download).

    make demo-fast                             # or any stack with a few weeks of loop behind it
    .venv/bin/python scripts/screenshots.py    # writes docs/img/*.png

Needs `apt-get install -y chromium` once. Uses the stack of the current settings (MLOPS_HOME,
ports) and Airflow's generated admin login.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def login(page: Any, airflow_url: str, user: str, password: str, then: str) -> None:
    page.goto(f"{airflow_url}{then}")
    if "/auth/login" in page.url:
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"**{then}**", timeout=30_000)


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    from include.mlops.adapters.airflow_api import AirflowClient
    from include.mlops.runtime import load_runtime
    from include.mlops.settings import get_settings
    from tooling.demo import asset_id
    from tooling.stack import airflow_login

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("Debian chromium is not installed: apt-get install -y chromium", file=sys.stderr)
        return 2
    s = get_settings()
    creds = airflow_login(s)
    if creds is None:
        print(f"no Airflow login under {s.airflow_home}: is the stack up (make up)?", file=sys.stderr)
        return 2
    client = AirflowClient.for_home(s.airflow_url, s.airflow_home)
    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        login(page, s.airflow_url, *creds, then="/mlops-loop/")
        page.screenshot(path=str(args.out / "status-page.png"))
        shots = {
            "airflow-asset-graph.png": f"{s.airflow_url}/assets/{asset_id(client, 'drift_detected')}",
        }
        for name, url in shots.items():
            page.goto(url)
            page.wait_for_load_state("load")
            page.wait_for_timeout(2500)
            page.screenshot(path=str(args.out / name))
        page.goto(f"{s.mlflow_url}/#/models/{load_runtime(s).model_name}")
        page.wait_for_load_state("load")
        page.wait_for_timeout(2500)
        for close in page.query_selector_all("button[aria-label='Close'], button[aria-label='close']"):
            if close.is_visible():  # MLflow's assistant side panel
                close.click()
                page.wait_for_timeout(500)
        page.screenshot(path=str(args.out / "mlflow-registry.png"))
        page.goto(s.evidently_url)
        page.wait_for_load_state("load")
        page.wait_for_timeout(2000)
        link = page.query_selector("a[href*='/projects/']")
        if link is not None:
            link.click()
            page.wait_for_load_state("load")
            page.wait_for_timeout(4000)
        page.screenshot(path=str(args.out / "evidently-dashboard.png"))
        browser.close()
    for f in sorted(args.out.glob("*.png")):
        print(f"{f.relative_to(ROOT)}  {f.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
