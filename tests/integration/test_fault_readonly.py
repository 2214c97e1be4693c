"""Fault: the data folder's disk turns read-only under an ingest.

The lake lives on a real filesystem of the test's own (a small tmpfs), remounted read-only after
the batch landed: what a full or failing disk does. The ingest must fail with an error that says
the data folder cannot be written, leave nothing half-written (no accepted batch, no ground-truth
rows, no pool partition, the delivery still in landing), and succeed exactly once when the disk
is writable again. Needs root (mount); the CI machine and this one run the tests as root.
"""

from __future__ import annotations

import os
import subprocess
from datetime import date

import pytest

from include.mlops.steps.ingest import IngestError, ingest_file
from tooling.replay import day_frame, write_day

pytestmark = pytest.mark.integration

DAY = date(2013, 1, 9)


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def lake_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a filesystem needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk))
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False, timeout=30)


def test_read_only_data_folder_fails_clearly_and_writes_nothing(lake_disk, tmp_path, monkeypatch, flights):
    from include.mlops.runtime import load_runtime

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLOPS_OPS_DB_URL", f"sqlite:///{tmp_path / 'ops.db'}")  # the ops store is on another disk
    monkeypatch.setenv("MLOPS_LAKE", str(lake_disk / "lake"))
    rt = load_runtime()
    path = write_day(rt, flights, DAY)
    mount("-o", "remount,ro", str(lake_disk))

    with pytest.raises(IngestError, match=r"data folder .* cannot be written.*Read-only file system") as failed:
        ingest_file(path, rt.spec, rt.store, rt.lake, model=rt.model_name)
    assert str(rt.lake.root) in str(failed.value)
    assert path.exists()  # still in landing
    assert rt.store.count_ground_truth(rt.model_name) == 0
    assert [b["status"] for b in rt.store.list_batches(rt.model_name) if b["status"] in ("accepted", "quarantined")] == []
    assert not list(rt.lake.pool.glob("day=*"))
    assert rt.store.list_decisions(kind="ingest") == []

    mount("-o", "remount,rw", str(lake_disk))
    again = ingest_file(path, rt.spec, rt.store, rt.lake, model=rt.model_name)
    assert again.status == "accepted"
    assert rt.store.count_ground_truth(rt.model_name) == len(day_frame(flights, rt.spec, DAY))
    assert len(rt.store.list_batches(rt.model_name)) == 1
    assert len(rt.store.list_decisions(kind="ingest")) == 1
