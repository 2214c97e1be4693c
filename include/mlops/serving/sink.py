"""Where the inference log goes: one writer thread, its journal and its dead-letter file, shared by
every model the process serves (each record names its model in ``model_name``).

:class:`LogSink` opens the ops store (migrating it when reachable), replays what killed processes
left in the journal folder, then starts the :class:`~.logwriter.InferenceLogWriter`; ``/health``
reports it under ``inference_log``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from include.mlops.serving.deadletter import DeadLetter
from include.mlops.serving.journal import Journal, recover
from include.mlops.serving.logwriter import InferenceLogWriter, Record

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine

    from include.mlops.serving.metrics import ServingMetrics
    from include.mlops.settings import Settings

log = logging.getLogger(__name__)


def open_engine(url: str) -> Engine:
    """The ops store's engine, migrated when reachable; the log writer retries when it is not (yet)."""
    from include.mlops.adapters.store import Store, get_engine

    try:
        return Store.open(url).engine
    except Exception as exc:
        log.warning("ops store %s is not available at start-up (%s); inference-log writes will be retried", url, exc)
        return get_engine(url)


def open_journal(folder: Path | None, engine: Engine, dead_letter: DeadLetter | None = None) -> Journal | None:
    """Replay what killed processes left in the journal folder, then open this process's file."""
    if folder is None:
        return None
    try:
        recover(folder, engine, dead_letter)  # logs what it recovered
    except Exception as exc:  # the ops store may be down: the files stay for the next start
        log.warning("inference log journal in %s not replayed now (%s); the next start tries again", folder, exc)
    journal = Journal(folder)
    journal.open()
    return journal


class LogSink:
    """The inference-log writer of the process (started once, shared by every model's service)."""

    def __init__(self, settings: Settings, metrics: ServingMetrics, engine: Engine | None = None):
        self.settings = settings
        self.metrics = metrics
        self._engine = engine
        self.writer: InferenceLogWriter | None = None
        self.dead_letter = DeadLetter(settings.home / "serving-dead-letter")

    async def start(self) -> None:
        if self.writer is not None:
            return
        engine = self._engine if self._engine is not None else await asyncio.to_thread(open_engine, self.settings.ops_db_url)
        journal = await asyncio.to_thread(open_journal, self.settings.serving_journal_dir, engine, self.dead_letter)
        # Drain within the stack's stop grace (uvicorn gets 10 s for in-flight requests, then this).
        self.writer = InferenceLogWriter(engine, metrics=self.metrics, drain_timeout=8.0, journal=journal, dead_letter=self.dead_letter)
        self.metrics.track_queue(lambda: float(self.writer.depth) if self.writer else 0.0)
        self.writer.start()

    async def stop(self) -> None:
        """Write every queued record (after the models' batchers have drained)."""
        if self.writer is not None:
            lost = await asyncio.to_thread(self.writer.close)
            log.info("serving stopped: %d inference-log records written, %d lost", self.writer.written, lost)

    def submit(self, records: list[Record]) -> None:
        if self.writer is not None:
            self.writer.submit(records)

    def health(self) -> dict[str, Any]:
        writer = self.writer
        return {
            "writer_alive": writer.alive if writer else None,
            "queue_depth": writer.depth if writer else 0,
            "written": writer.written if writer else 0,
            "dropped": writer.dropped if writer else 0,
            "dead_letter": self.dead_letter.total,
            "dead_letter_file": str(self.dead_letter.path),
        }
