"""Where the loop keeps its files: one layout under the lake root, per model.

<lake>/landing/                    new label batches arrive here (+ the ``_READY`` marker)
<lake>/pool/<model>/day=<day>/     the training pool: accepted batches, partitioned by day
<lake>/archive/<model>/            accepted batch files as delivered
<lake>/quarantine/<model>/         rejected batch files, untouched
<lake>/reports/<model>/ingest/     validation report (HTML) and GX result (JSON) per batch
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

#: Touching this file in a landing folder tells the ingest DAG's asset watcher to look.
READY_MARKER = "_READY"


def landing_dir(lake_root: Path) -> Path:
    return lake_root / "landing"


@dataclass(frozen=True)
class Lake:
    root: Path
    model: str

    @property
    def landing(self) -> Path:
        """Shared by the deployment (one spec per deployment): the ingest DAG watches it."""
        return landing_dir(self.root)

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
