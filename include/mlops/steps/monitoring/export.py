"""The inference log as monitoring reads it.

The inference log lives in the ops store (the system of record, joined to ground truth); for
analysis it is exported incrementally to a columnar copy, ``<lake>/inference/<model>/day=*/``,
which a monitoring window reads by event time. Labelled predictions (for realized quality) come
from the ops store's join of the log to ground truth.
"""

from __future__ import annotations

import io
import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.lake import atomic_write_bytes, inference_files, read_inference

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.runtime import Runtime


EXPORT_KEY = "inference_export_last_id"
PROBE_PREFIX = "probe-"
LOG_COLUMNS = [
    "id",
    "request_id",
    "entity_id",
    "model_version",
    "route",
    "event_time",
    "score",
    "prediction",
    "latency_ms",
    "model_ms",
    "status",
    "created_at",
]


def inference_dir(rt: Runtime) -> Path:
    return rt.lake.root / "inference" / rt.model_name


def export_inference(rt: Runtime, chunk: int = 100_000) -> dict[str, Any]:
    """Append inference-log rows not exported yet to ``<lake>/inference/<model>/day=<event day>/``.

    Incremental by row id; a part file is named by its id range, so a retry after a crash rewrites
    the same file instead of adding a duplicate, and the high-water mark moves only after the write.
    """
    import pandas as pd

    last = int(rt.store.get_state(rt.model_name, EXPORT_KEY, 0))
    written, files = 0, 0
    features = rt.spec.feature_names
    while True:
        rows = rt.store.inference_rows(rt.model_name, [*LOG_COLUMNS, "features"], after_id=last, limit=chunk)
        if not rows:
            break
        df = pd.DataFrame(rows, columns=[*LOG_COLUMNS, "features"])
        feats = pd.DataFrame([(f if isinstance(f, dict) else json.loads(f) if f else {}) for f in df.pop("features")]).reindex(
            columns=features
        )
        df = pd.concat([df.reset_index(drop=True), feats.reset_index(drop=True)], axis=1)
        df["event_time"] = pd.to_datetime(df["event_time"]).fillna(pd.to_datetime(df["created_at"]))
        df["day"] = df["event_time"].dt.strftime("%Y-%m-%d")
        first, high = int(df["id"].iloc[0]), int(df["id"].iloc[-1])
        # the consistency probe's rows carry wall-clock time: they are no window's traffic (and
        # would make "today" the latest event day of a replayed year)
        df = df[~df["entity_id"].fillna("").astype(str).str.startswith(PROBE_PREFIX)]
        for day, part in df.groupby("day"):
            path = inference_dir(rt) / f"day={day}" / f"part-{first:012d}-{high:012d}.parquet"
            buf = io.BytesIO()
            part.drop(columns=["day"]).to_parquet(buf, index=False)
            atomic_write_bytes(path, buf.getvalue())
            files += 1
        written += len(df)
        last = high
        rt.store.set_state(rt.model_name, EXPORT_KEY, last)
    return {"rows": written, "files": files, "last_id": last}


def read_window(rt: Runtime, start: datetime, end: datetime, versions: list[str] | None = None) -> pd.DataFrame:
    """Exported inference rows with event time in [start, end) (probe traffic excluded)."""
    import pandas as pd

    last = (end - timedelta(microseconds=1)).date()
    if end <= start or not inference_files(rt.lake.root, rt.model_name, start.date(), last):
        return pd.DataFrame(columns=[*LOG_COLUMNS, *rt.spec.feature_names])
    # the parts of a day can differ in schema (a column all null in one part): read_inference unifies them
    df = read_inference(rt.lake.root, rt.model_name, start.date(), last)
    df = df[(df["event_time"] >= start) & (df["event_time"] < end)]
    df = df[~df["entity_id"].fillna("").astype(str).str.startswith(PROBE_PREFIX)]
    if versions is not None:
        df = df[df["model_version"].isin(versions) | (df["status"] == "rejected")]
    return df.reset_index(drop=True)


def latest_event_day(rt: Runtime) -> date | None:
    days = sorted(p.name.removeprefix("day=") for p in inference_dir(rt).glob("day=*"))
    return date.fromisoformat(days[-1]) if days else None


def labelled(rt: Runtime, version: str, end: datetime) -> pd.DataFrame:
    """Scored rows of ``version`` joined to their labels (a regressor's: the outcomes), over the ``quality_days`` before ``end``
    (probe traffic excluded; one row per entity)."""
    import pandas as pd

    from include.mlops.domain.tasks import truth_column

    start = end - timedelta(days=rt.spec.monitoring.quality_days)
    rows = rt.store.labelled_inference(
        rt.model_name,
        ["entity_id", "score"],
        routes=["champion", "challenger", "shadow"],
        version=version,
        event_from=start,
        event_to=end,
        truth=truth_column(rt.spec.task),
    )
    df = pd.DataFrame(rows, columns=["entity_id", "score", "label"]).drop_duplicates("entity_id")
    return df[~df["entity_id"].astype(str).str.startswith(PROBE_PREFIX)]
