"""Command line for the running stack: trigger a DAG through Airflow's REST API and follow it.

python -m tooling.cli trigger train_candidate --conf '{"train_start": "2013-01-01", "train_end": "2013-01-31"}' --wait
"""

from __future__ import annotations

import argparse
import json
import sys

from include.mlops.adapters.airflow_api import AirflowAPIError, AirflowClient
from include.mlops.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.cli", description="Drive the running mlops-loop stack.")
    sub = parser.add_subparsers(dest="verb", required=True)
    trig = sub.add_parser("trigger", help="start a DAG run now")
    trig.add_argument("dag_id")
    trig.add_argument("--conf", default="{}", help="JSON object of params")
    trig.add_argument("--wait", action="store_true", help="wait for the run to finish and print its task labels")
    trig.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    try:
        conf = json.loads(args.conf)
    except ValueError as exc:
        parser.error(f"--conf is not valid JSON: {exc}")
    if not isinstance(conf, dict):
        parser.error("--conf must be a JSON object")
    s = get_settings()
    try:
        client = AirflowClient.for_home(s.airflow_url, s.airflow_home)
        run_id = client.trigger(args.dag_id, conf)
        print(f"triggered {args.dag_id}: {run_id}\n  {s.airflow_url}/dags/{args.dag_id}/runs/{run_id}")
        if not args.wait:
            return 0
        run = client.wait(args.dag_id, run_id, timeout=args.timeout)
        for ti in client.task_instances(args.dag_id, run_id):
            label = ti.get("rendered_map_index") or ""
            print(f"  {ti['task_id']:24} {ti['state'] or '-':10} {label}")
        print(f"run {run['state']}")
        return 0 if run["state"] == "success" else 1
    except AirflowAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
