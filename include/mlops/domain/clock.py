"""The loop's one notion of "now": naive UTC, as every timestamp in the ops store is stored."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time in UTC without tzinfo (the ops store's columns are naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)
