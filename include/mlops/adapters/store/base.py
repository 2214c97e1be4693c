"""What every part of :class:`~include.mlops.adapters.store.Store` shares: the engine, a
transaction, and how values are made plain before they are stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, Engine


@dataclass
class StoreBase:
    """The ops store of one database: the per-concern query mixins build on this."""

    engine: Engine

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn


def naive_utc(value: datetime | None) -> datetime | None:
    """Timestamps are stored as naive UTC: an aware one is converted, a naive one is taken as UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def new_id(result: Any) -> int:
    """Primary key of the row an INSERT just created."""
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every table here has an integer key
        raise RuntimeError("insert returned no primary key")
    return int(key[0])


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars, dates and paths are stored as plain values."""
    return json.loads(json.dumps(value, default=json_default))


def json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)
