"""The inference log's write-ahead journal: a killed serving process loses no answered request.

The log writer batches records in memory and inserts them off the request path; a graceful stop
drains that queue, but a process that is killed (SIGKILL, OOM) would lose what was still queued.
So before a response leaves, its records are also appended to a journal file of the process's own
(one ``write`` of JSON lines: no fsync, the page cache survives a process that dies; a machine
crash is out of scope). The writer commits, in the same transaction as each insert, how many
records of each journal file are in the database (table ``log_journal``). The next process to
start (a restarted worker, another replica on the same folder) takes every journal file no live
process holds (each owner keeps an exclusive ``flock`` on its file), inserts the records after the
committed count, in one transaction with the new count, and deletes the file: every answered
record reaches the log exactly once. A torn last line (the process died inside the write, so that
response was never sent) is ignored. A record the store refuses as data during a replay goes to
the dead-letter file (:mod:`.deadletter`) with its error, so one bad record cannot stop the
replay at every start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.mlops.adapters.store import Store
from include.mlops.serving.deadletter import DeadLetter, describe, transient

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

Record = dict[str, Any]
_DATETIMES = ("event_time", "created_at")


def _encode(records: list[Record]) -> bytes:
    lines = []
    for r in records:
        out = dict(r)
        for key in _DATETIMES:
            value = out.get(key)
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        lines.append(json.dumps(out, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n").encode()


def _decode(line: bytes) -> Record:
    record: Record = json.loads(line)
    for key in _DATETIMES:
        value = record.get(key)
        if isinstance(value, str):
            record[key] = datetime.fromisoformat(value)
    return record


class Journal:
    """This process's journal files in ``folder``; :meth:`append` is called under the writer's lock."""

    def __init__(self, folder: Path, segment_bytes: int = 64 << 20):
        self.folder = folder
        self.segment_bytes = segment_bytes
        self._fd: int | None = None
        self.segment = ""
        self.count = 0  # records in the current segment
        self._size = 0
        self.closed: dict[str, int] = {}  # rotated-out segments of this process: name -> record count
        self._lock = threading.Lock()

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._new_segment()

    def _new_segment(self) -> None:
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while this process lives
        if self._fd is not None:
            self.closed[self.segment] = self.count
            os.close(self._fd)
        self._fd, self.segment, self.count, self._size = fd, name, 0, 0

    def append(self, records: list[Record]) -> tuple[str, int]:
        """Write ``records`` durably enough to survive this process; returns (segment, index of
        the first record in it)."""
        data = _encode(records)
        with self._lock:
            if self._size >= self.segment_bytes:
                self._new_segment()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            first = self.count
            self.count += len(records)
            self._size += len(data)
            return self.segment, first

    def forget(self, store: Store, segments: list[str]) -> None:
        """Rotated-out segments whose records are all committed: delete their files and rows."""
        for segment in segments:
            (self.folder / segment).unlink(missing_ok=True)
        store.forget_journal_segments(segments)
        for segment in segments:
            self.closed.pop(segment, None)

    def close(self, store: Store, fully_written: bool) -> None:
        """At a graceful stop: when every record reached the database, the files go too."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if fully_written:
            segments = [*self.closed, self.segment]
            for segment in segments:
                (self.folder / segment).unlink(missing_ok=True)
            store.forget_journal_segments(segments)
            self.closed.clear()


def recover(folder: Path, engine: Engine, dead_letter: DeadLetter | None = None) -> int:
    """Insert what dead processes' journals hold beyond their checkpoints; returns the count."""
    if not folder.is_dir():
        return 0
    store = Store(engine)
    store.prune_journal(p.name for p in folder.glob("*.jsonl"))  # rows of files already gone (a crash between unlink and delete)
    total = 0
    for path in sorted(folder.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process owns it
            total += _replay(path, store, dead_letter)
        finally:
            os.close(fd)
    return total


def _decode_or_none(line: bytes) -> Record | None:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        record = _decode(line)
        return record if isinstance(record, dict) else None
    return None


class _Prefix:
    """The first ``n`` records of a journal file, as the store's replay reads them (len and slices)."""

    def __init__(self, records: list[Record | None], n: int):
        self.records = records
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: slice) -> list[Record | None]:
        start, stop, _ = index.indices(self.n)
        return self.records[start:stop]


#: Records per transaction when a replay goes piece by piece (after the whole file was refused).
REPLAY_CHUNK = 500


def _replay_piecewise(name: str, records: list[Record | None], store: Store, dead_letter: DeadLetter | None, first: Exception) -> int:
    """Replay in chunks, a refused chunk record by record; a record refused alone is dead-lettered
    (or, with no dead-letter file, skipped with an error) and the checkpoint moves past it."""
    log.warning("inference log: replay of %s refused (%s); replaying it piece by piece", name, describe(first)[:300])
    added = 0
    start = 0
    while start < len(records):
        end = min(start + REPLAY_CHUNK, len(records))
        try:
            added += store.replay_journal_segment(name, _Prefix(records, end))  # type: ignore[arg-type]
        except Exception as exc:
            if transient(exc):
                raise
            for i in range(start, end):
                try:
                    added += store.replay_journal_segment(name, _Prefix(records, i + 1))  # type: ignore[arg-type]
                except Exception as one:
                    if transient(one):
                        raise
                    record = records[i]
                    if record is not None and (dead_letter is None or not dead_letter.put(record, describe(one))):
                        log.error("inference log: journal record %d of %s refused and skipped: %s", i, name, describe(one)[:300])
                    records[i] = None
                    store.replay_journal_segment(name, _Prefix(records, i + 1))  # type: ignore[arg-type]  # past it
        start = end
    return added


def _replay(path: Path, store: Store, dead_letter: DeadLetter | None = None) -> int:
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the text after the last newline is a torn write (or empty)
    records = [_decode_or_none(line) for line in complete]
    # the records past the checkpoint, and the checkpoint moved to the end, in one transaction:
    # a crash before the unlink below replays nothing twice
    try:
        added = store.replay_journal_segment(path.name, records)
    except Exception as exc:
        if transient(exc):
            raise
        added = _replay_piecewise(path.name, records, store, dead_letter, exc)
    path.unlink(missing_ok=True)
    store.forget_journal_segments([path.name])
    if added or lines[-1]:
        log.warning(
            "inference log: recovered %d records from %s, left by a process that did not stop cleanly%s",
            added,
            path.name,
            " (and ignored a torn last line)" if lines[-1] else "",
        )
    return added
