"""The inference log (every scored or rejected request, written by the serving API), its join to
ground truth, and the checkpoints of the serving API's write-ahead journal (``log_journal``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, and_, delete, func, insert, select, update

from include.mlops.adapters.store.base import StoreBase
from include.mlops.adapters.store.schema import ground_truth, inference_log, log_journal, utcnow

Record = dict[str, Any]


def write_journal_checkpoints(conn: Connection, marks: Mapping[str, int]) -> None:
    """Record, in the caller's transaction, that the first ``n`` records of each journal segment are in."""
    now = utcnow()
    for segment, n in marks.items():
        done = conn.execute(update(log_journal).where(log_journal.c.segment == segment).values(records=n, updated_at=now)).rowcount
        if not done:
            conn.execute(insert(log_journal).values(segment=segment, records=n, updated_at=now))


class InferenceQueries(StoreBase):
    # -- writing (the serving API) ---------------------------------------------------------------
    def append_inference(self, records: Sequence[Record], journal_marks: Mapping[str, int] | None = None) -> None:
        """Insert inference-log records and, in the same transaction, the journal checkpoints that
        say they are in (so a replay of the journal never adds them again)."""
        with self.begin() as conn:
            if records:
                conn.execute(insert(inference_log), list(records))
            if journal_marks:
                write_journal_checkpoints(conn, journal_marks)

    def checkpoint_journal(self, marks: Mapping[str, int]) -> None:
        """Move the journal checkpoints alone (after records were written one by one)."""
        with self.begin() as conn:
            write_journal_checkpoints(conn, marks)

    def forget_journal_segments(self, segments: Iterable[str]) -> None:
        """Delete the checkpoints of journal files that are gone."""
        names = list(segments)
        if names:
            with self.begin() as conn:
                conn.execute(delete(log_journal).where(log_journal.c.segment.in_(names)))

    def prune_journal(self, keep: Iterable[str]) -> list[str]:
        """Delete the checkpoints of every segment not in ``keep`` (files already gone); returns them."""
        kept = set(keep)
        with self.begin() as conn:
            gone = [s for s in conn.execute(select(log_journal.c.segment)).scalars().all() if s not in kept]
            if gone:
                conn.execute(delete(log_journal).where(log_journal.c.segment.in_(gone)))
        return gone

    def replay_journal_segment(self, segment: str, records: Sequence[Record | None]) -> int:
        """Insert the records of a journal file past its checkpoint (``None``: a line that could not be
        read, skipped) and move the checkpoint to its end, in one transaction; returns how many went in."""
        with self.begin() as conn:
            done = conn.execute(select(log_journal.c.records).where(log_journal.c.segment == segment)).scalar_one_or_none() or 0
            todo = [r for r in records[done:] if r is not None]
            if todo:
                conn.execute(insert(inference_log), todo)
            write_journal_checkpoints(conn, {segment: len(records)})
        return len(todo)

    # -- reading ------------------------------------------------------------------------------------
    def inference_rows(
        self,
        model: str,
        columns: Sequence[str],
        *,
        after_id: int | None = None,
        created_from: datetime | None = None,
        versions: Iterable[str] | None = None,
        routes: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """``columns`` of the inference log of ``model``, in id order: rows after ``after_id``,
        created at or after ``created_from``, of these versions and routes (each filter optional)."""
        q = select(*(inference_log.c[c] for c in columns)).where(inference_log.c.model_name == model).order_by(inference_log.c.id)
        if after_id is not None:
            q = q.where(inference_log.c.id > after_id)
        if created_from is not None:
            q = q.where(inference_log.c.created_at >= created_from)
        if versions is not None:
            q = q.where(inference_log.c.model_version.in_([str(v) for v in versions]))
        if routes is not None:
            q = q.where(inference_log.c.route.in_(list(routes)))
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(q).all()]

    def inference_status_counts(
        self,
        model: str,
        *,
        created_from: datetime,
        version: str | None = None,
        routes: Iterable[str] | None = None,
        distinct_requests: bool = False,
    ) -> dict[str, int]:
        """Rows (or distinct requests) per status since ``created_from``, of one version and these routes."""
        counted = func.count(func.distinct(inference_log.c.request_id)) if distinct_requests else func.count()
        q = (
            select(inference_log.c.status, counted)
            .where(inference_log.c.model_name == model, inference_log.c.created_at >= created_from)
            .group_by(inference_log.c.status)
        )
        if version is not None:
            q = q.where(inference_log.c.model_version == str(version))
        if routes is not None:
            q = q.where(inference_log.c.route.in_(list(routes)))
        with self.engine.connect() as conn:
            return {str(status): int(n) for status, n in conn.execute(q).all()}

    def release_traffic(self, model: str, *, created_from: datetime, routes: Iterable[str]) -> tuple[int, int]:
        """Since ``created_from``, on these routes: the distinct entities scored and already labelled
        (the rows a promotion is judged on), and the distinct days of event time scored (a stray
        request far in the past or future adds one day, not the span between)."""
        ok = (inference_log.c.model_name == model, inference_log.c.status == "ok", inference_log.c.route.in_(list(routes)))
        labelled = (
            select(func.count(func.distinct(inference_log.c.entity_id)))
            .select_from(inference_log)
            .join(
                ground_truth,
                and_(ground_truth.c.entity_id == inference_log.c.entity_id, ground_truth.c.model_name == inference_log.c.model_name),
            )
            .where(*ok, inference_log.c.created_at >= created_from)
        )
        days = select(func.count(func.distinct(func.date(inference_log.c.event_time)))).where(
            *ok, inference_log.c.created_at >= created_from
        )
        with self.engine.connect() as conn:
            return int(conn.execute(labelled).scalar_one()), int(conn.execute(days).scalar_one())

    def count_rejected(self, model: str, created_from: datetime, created_to: datetime) -> int:
        """Requests the serving API rejected (schema validation) created in [from, to]."""
        q = (
            select(func.count())
            .select_from(inference_log)
            .where(
                inference_log.c.model_name == model,
                inference_log.c.status == "rejected",
                inference_log.c.created_at >= created_from,
                inference_log.c.created_at <= created_to,
            )
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def labelled_inference(
        self,
        model: str,
        columns: Sequence[str],
        *,
        routes: Iterable[str],
        version: str | None = None,
        event_from: datetime | None = None,
        event_to: datetime | None = None,
        created_from: datetime | None = None,
        truth: Literal["label", "outcome"] = "label",
    ) -> list[tuple[Any, ...]]:
        """Successful predictions joined to their ground truth (by entity): ``columns`` of the
        inference log then the label, for these routes, one version (optional), event time in
        [``event_from``, ``event_to``) and created at or after ``created_from`` (each optional).
        An entity scored more than once appears once per scoring. ``truth``: the derived 0/1
        ``label`` (a classifier's), or the raw ``outcome`` (a regressor's target itself)."""
        q = (
            select(*(inference_log.c[c] for c in columns), ground_truth.c[truth])
            .join(
                ground_truth,
                and_(ground_truth.c.entity_id == inference_log.c.entity_id, ground_truth.c.model_name == inference_log.c.model_name),
            )
            .where(inference_log.c.model_name == model, inference_log.c.status == "ok", inference_log.c.route.in_(list(routes)))
        )
        if version is not None:
            q = q.where(inference_log.c.model_version == str(version))
        if event_from is not None:
            q = q.where(inference_log.c.event_time >= event_from)
        if event_to is not None:
            q = q.where(inference_log.c.event_time < event_to)
        if created_from is not None:
            q = q.where(inference_log.c.created_at >= created_from)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(q).all()]
