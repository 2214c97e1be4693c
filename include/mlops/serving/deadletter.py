"""The inference log's dead-letter file: a record the ops store refuses is kept here, with its error.

The log writer (and the journal replay at start-up) must never stop on one record: a record the
database refuses as data (not a connection problem) is appended to ``<folder>/dead-letter.jsonl``
as one JSON line ``{"at", "error", "record"}`` and the writer goes on with the next. The line is
written with ASCII escapes (``json.dumps`` default), so any string a record holds (a NUL, a lone
surrogate) is kept exactly and can be inspected or replayed by hand. ``/health`` reports the count.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError

log = logging.getLogger(__name__)

FILE_NAME = "dead-letter.jsonl"


def transient(exc: BaseException) -> bool:
    """A failure worth retrying as is: the database is unreachable, locked or restarting.

    Anything else (a constraint, a value the driver cannot encode: NUL, a lone surrogate) is about
    the record, and retrying it would block every record behind it.
    """
    if isinstance(exc, (OperationalError, DisconnectionError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class DeadLetter:
    """Appends refused records to ``folder/dead-letter.jsonl`` (one ``write`` per record, O_APPEND)."""

    def __init__(self, folder: Path):
        self.path = folder / FILE_NAME
        self.count = 0  # records dead-lettered by this process
        self.existing = 0  # lines the file held when this process opened it
        self._lock = threading.Lock()
        try:
            with self.path.open("rb") as fh:
                self.existing = sum(1 for _ in fh)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("inference log dead-letter file %s unreadable: %s", self.path, exc)

    @property
    def total(self) -> int:
        return self.existing + self.count

    def put(self, record: dict[str, Any], error: str) -> bool:
        """Keep ``record`` with ``error``; False when even the file could not be written."""
        line = json.dumps({"at": datetime.now(UTC).isoformat(timespec="seconds"), "error": error, "record": record}, default=str)
        data = (line + "\n").encode("ascii", "backslashreplace")
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
                self.count += 1
        except OSError as exc:
            log.error("inference log: cannot write the dead-letter file %s (%s); record lost", self.path, exc)
            return False
        log.error(
            "inference log: record refused by the ops store (%s), kept in %s: request_id=%r entity_id=%r",
            error,
            self.path,
            str(record.get("request_id"))[:80],
            str(record.get("entity_id"))[:80],
        )
        return True
