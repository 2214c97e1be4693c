"""The inference log writer: every scored (or rejected) row reaches ``inference_log``, off the request path.

A request hands its records to :meth:`InferenceLogWriter.submit` (a queue put, no I/O) and answers;
one background thread drains the queue and writes bulk inserts of up to ``batch_size`` records with
SQLAlchemy Core. When the database is unavailable (locked, restarting, network), the batch is
retried with a capped exponential back-off rather than dropped; :meth:`close` (called from the app's
shutdown, i.e. on SIGTERM) stops taking records and drains the queue, giving up only after
``drain_timeout`` seconds of failures, and says how many records it could not write. A record the
database refuses as data (not a connection problem: a constraint, a value the driver cannot encode)
is written alone so it cannot block the others, and when it is refused alone it goes to the
dead-letter file (:mod:`.deadletter`) with its error. The thread never dies on a record: any
unexpected failure is logged and the records it held are dead-lettered; ``/health`` reports
whether the thread is alive, the queue depth and the dead-letter count.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from include.mlops.adapters.store import Store
from include.mlops.serving.deadletter import DeadLetter, describe, transient
from include.mlops.serving.journal import Journal

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from include.mlops.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

Record = dict[str, Any]


class InferenceLogWriter:
    """Queue + one writer thread doing batched inserts into ``inference_log``."""

    def __init__(
        self,
        engine: Engine,
        *,
        metrics: ServingMetrics | None = None,
        batch_size: int = 1000,
        flush_seconds: float = 0.2,
        max_pending: int = 200_000,
        drain_timeout: float = 30.0,
        journal: Journal | None = None,
        dead_letter: DeadLetter | None = None,
    ):
        self._store = Store(engine)
        self.journal = journal
        self.dead_letter = dead_letter
        self._order = threading.Lock()  # journal order == queue order, so a checkpoint covers a prefix
        self._metrics = metrics
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.drain_timeout = drain_timeout
        self._queue: queue.SimpleQueue[tuple[list[Record], str, int] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self.written = 0
        self.dropped = 0
        self.dead_lettered = 0
        self._closing = threading.Event()
        self._deadline = float("inf")
        self._thread: threading.Thread | None = None
        self._last_warning = 0.0

    @property
    def depth(self) -> int:
        """Records accepted but not yet written."""
        return self._pending

    @property
    def alive(self) -> bool:
        """The writer thread runs (False before :meth:`start` and after :meth:`close`)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference-log-writer", daemon=True)
            self._thread.start()

    def submit(self, records: list[Record]) -> bool:
        """Queue records for writing (never blocks). False when they had to be dropped."""
        if not records:
            return True
        with self._lock:
            if self._pending + len(records) > self.max_pending:
                self.dropped += len(records)
                full = True
            else:
                self._pending += len(records)
                full = False
        if full:
            if self._metrics:
                self._metrics.log_dropped.inc(len(records))
            self._warn(f"inference log queue is full ({self.max_pending} records): {len(records)} records dropped")
            return False
        if self.journal is None:
            self._queue.put((records, "", 0))
            return True
        with self._order:
            segment, first = self.journal.append(records)  # before the response leaves
            self._queue.put((records, segment, first + len(records)))
        return True

    def close(self) -> int:
        """Write everything queued, then stop; returns the number of records that could not be written."""
        self._deadline = time.monotonic() + self.drain_timeout
        self._closing.set()
        self._queue.put(None)  # wake the writer
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        else:  # never started: drain in the caller
            self._run()
        lost = self.dropped
        if self.journal is not None:
            try:  # everything written: the journal files go; otherwise the next start replays them
                self.journal.close(self._store, fully_written=not lost and not self._pending)
            except SQLAlchemyError as exc:
                log.warning("inference log journal kept for the next start: %s", exc)
        if lost:
            log.error("inference log: %d records were not written (see earlier errors)", lost)
        else:
            log.info("inference log drained: %d records written in total", self.written)
        return lost

    # -- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        """Collect records for up to ``flush_seconds`` (or ``batch_size`` of them), then insert them in one go."""
        buf: list[Record] = []
        marks: dict[str, int] = {}  # journal segment -> records of it in ``buf`` or before
        due = 0.0
        while True:
            wait = self.flush_seconds if not buf else due - time.monotonic()
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                item = None
            if item:
                if not buf:
                    due = time.monotonic() + self.flush_seconds
                records, segment, end = item
                buf.extend(records)
                if segment:
                    marks[segment] = end
            closing = self._closing.is_set()
            if buf and (len(buf) >= self.batch_size or (closing and self._queue.empty()) or (not closing and time.monotonic() >= due)):
                self._flush(buf, marks)
                buf, marks = [], {}
            if closing and not buf and self._queue.empty():
                return

    def _flush(self, buf: list[Record], marks: dict[str, int]) -> None:
        """Write one batch; whatever goes wrong, the thread goes on (the records are dead-lettered)."""
        try:
            self._write(buf, marks)
            self._forget_finished(marks)
        except Exception as exc:  # a bug here must not stop inference logging
            log.exception("inference log: unexpected failure writing %d records; dead-lettering them", len(buf))
            for record in buf:
                self._refused(record, exc)
            if marks:
                self._checkpoint_alone(marks)

    def _forget_finished(self, marks: dict[str, int]) -> None:
        """Rotated-out journal files whose every record is in the database are deleted."""
        if self.journal is None:
            return
        finished = [seg for seg, n in marks.items() if self.journal.closed.get(seg) == n]
        if finished:
            try:
                self.journal.forget(self._store, finished)
            except SQLAlchemyError as exc:  # kept: the next start finds nothing left to replay in it
                log.warning("inference log journal: could not delete finished segments %s: %s", finished, exc)

    def _write(self, records: list[Record], marks: dict[str, int] | None = None) -> None:
        delay = 0.05
        while True:
            try:
                # the checkpoints in the same transaction: a replay never adds these records again
                self._store.append_inference(records, journal_marks=marks)
            except Exception as exc:  # not only SQLAlchemy's: a driver's encoding error is about the data too
                if self._metrics:
                    self._metrics.log_write_errors.inc()
                if not transient(exc):
                    self._write_one_by_one(records, exc)
                    if marks:
                        self._checkpoint_alone(marks)
                    return
                if self._closing.is_set() and time.monotonic() > self._deadline:
                    self._done(0, len(records))
                    log.error("inference log: database still unavailable at shutdown, %d records not written: %s", len(records), exc)
                    return
                self._warn(f"inference log: database unavailable, retrying {len(records)} records in {delay:.2f}s: {exc}")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                self._done(len(records), 0)
                return

    def _write_one_by_one(self, records: list[Record], first: Exception) -> None:
        log.warning("inference log: bulk insert refused (%s); writing %d records one by one", describe(first)[:300], len(records))
        for record in records:
            try:
                self._store.append_inference([record])
            except Exception as exc:
                if transient(exc):
                    self._write([record])  # back to retrying
                    continue
                self._refused(record, exc)
            else:
                self._done(1, 0)

    def _refused(self, record: Record, exc: BaseException) -> None:
        """A record the store refused alone: to the dead-letter file (dropped only when there is none)."""
        if self.dead_letter is not None and self.dead_letter.put(record, describe(exc)):
            with self._lock:
                self._pending -= 1
                self.dead_lettered += 1
            if self._metrics:
                self._metrics.log_dead_lettered.inc()
            return
        self._done(0, 1)
        log.error("inference log: record refused and dropped (%s)", describe(exc)[:300])

    def _checkpoint_alone(self, marks: dict[str, int]) -> None:
        """After records were written one by one (some refused as data): the journal moves past them."""
        try:
            self._store.checkpoint_journal(marks)
        except Exception as exc:
            log.warning("inference log journal: checkpoint not written (%s); a replay may repeat these records", exc)

    def _done(self, written: int, dropped: int) -> None:
        with self._lock:
            self._pending -= written + dropped
            self.written += written
            self.dropped += dropped
        if self._metrics:
            if written:
                self._metrics.log_written.inc(written)
            if dropped:
                self._metrics.log_dropped.inc(dropped)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 5.0:  # at most one warning every 5 s
            self._last_warning = now
            log.warning(message)
