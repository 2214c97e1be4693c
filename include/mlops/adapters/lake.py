"""Where the loop keeps its files: one layout under the lake root, per model.

<lake>/landing/                    the default model's new label batches arrive here (+ the ``_READY`` marker)
<lake>/landings/<model>/           the same, for every other model (include.mlops.catalog)
<lake>/pool/<model>/day=<day>/     the training pool: accepted batches, partitioned by day
<lake>/archive/<model>/            accepted batch files as delivered
<lake>/quarantine/<model>/         rejected batch files, untouched
<lake>/reports/<model>/ingest/     validation report (HTML) and GX result (JSON) per batch
<lake>/inference/<model>/day=<day>/  the inference log's columnar copy for monitoring, by event day
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: Touching this file in a landing folder tells the ingest DAG's asset watcher to look.
READY_MARKER = "_READY"


def landing_dir(lake_root: Path) -> Path:
    return lake_root / "landing"


@dataclass(frozen=True)
class Lake:
    root: Path
    model: str
    #: the model's landing folder (``None``: ``<lake>/landing``, the default model's)
    landing_path: Path | None = None

    @property
    def landing(self) -> Path:
        """Where the model's label batches arrive: its ingest DAG watches it."""
        return self.landing_path or landing_dir(self.root)

    @property
    def pool(self) -> Path:
        return self.root / "pool" / self.model

    @property
    def archive(self) -> Path:
        return self.root / "archive" / self.model

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine" / self.model

    @property
    def ingest_reports(self) -> Path:
        return self.root / "reports" / self.model / "ingest"

    def pool_partition(self, day: str) -> Path:
        return self.pool / f"day={day}"

    def ensure(self) -> None:
        for p in (self.landing, self.pool, self.archive, self.quarantine, self.ingest_reports):
            p.mkdir(parents=True, exist_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` so readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def inference_files(root: str | Path, model: str, start: date | str, end: date | str) -> list[Path]:
    """Parquet parts of ``<root>/inference/<model>/day=YYYY-MM-DD/`` for the days ``start..end`` (inclusive)."""
    first = start if isinstance(start, date) else date.fromisoformat(start)
    last = end if isinstance(end, date) else date.fromisoformat(end)
    base = Path(root) / "inference" / model
    files: list[Path] = []
    day = first
    while day <= last:
        files.extend(sorted((base / f"day={day.isoformat()}").glob("part-*.parquet")))
        day += timedelta(days=1)
    return files


def read_inference(
    root: str | Path,
    model: str,
    start: date | str,
    end: date | str,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """The inference log of ``model`` for the days ``start..end`` as one frame, reading only ``columns``.

    ``categorical`` columns are read dictionary-encoded (pandas ``category``: one small integer per
    row instead of a Python string). Columns absent from every part are left out (the drift check
    reports them as ``missing_column``); parts whose schemas differ are unified.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = inference_files(root, model, start, end)
    if not files:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns or []})
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    wanted = [c for c in columns if c in schema.names] if columns is not None else list(schema.names)
    dict_cols = []
    for c in categorical:
        if c in wanted and (pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(schema.field(c).type)):
            schema = schema.set(schema.get_field_index(c), pa.field(c, pa.dictionary(pa.int32(), schema.field(c).type)))
            dict_cols.append(c)
    table = pq.read_table([str(f) for f in files], columns=wanted, schema=schema, read_dictionary=dict_cols)
    return table.to_pandas(self_destruct=True)
