"""Label batches (one row per delivered file) and their verdicts, quarantine records, and the
ground truth an accepted batch brings."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from include.mlops.adapters.store.base import StoreBase, jsonable, new_id
from include.mlops.adapters.store.decision_queries import Decision, insert_decision
from include.mlops.adapters.store.schema import batches, ground_truth, inference_log, quarantine, utcnow


class BatchQueries(StoreBase):
    def open_batch_for(self, model: str, file_name: str, sha: str) -> dict[str, Any] | None:
        """The unfinished record of this delivery (same name and content, file not yet moved)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(batches)
                    .where(
                        batches.c.model_name == model,
                        batches.c.file_name == file_name,
                        batches.c.content_sha256 == sha,
                        batches.c.moved_at.is_(None),
                    )
                    .order_by(batches.c.id.desc())
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def create_batch(
        self, model: str, file_name: str, sha: str, dag_id: str | None, run_id: str | None, arrived_at: datetime | None = None
    ) -> int:
        with self.begin() as conn:
            result = conn.execute(
                insert(batches).values(
                    model_name=model,
                    file_name=file_name,
                    content_sha256=sha,
                    status="validating",
                    reason_codes=[],
                    received_at=utcnow(),
                    arrived_at=arrived_at,
                    dag_id=dag_id,
                    run_id=run_id,
                )
            )
            return new_id(result)

    def get_batch(self, batch_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).mappings().one()
        return dict(row)

    def accepted_batch_with_sha(self, model: str, sha: str, exclude_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(batches).where(
                        batches.c.model_name == model,
                        batches.c.content_sha256 == sha,
                        batches.c.status == "accepted",
                        batches.c.id != exclude_id,
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def accepted_batch_for_day(self, model: str, day: date, exclude_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(batches).where(
                        batches.c.model_name == model,
                        batches.c.day == day,
                        batches.c.status == "accepted",
                        batches.c.id != exclude_id,
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def latest_accepted_day(self, model: str, arrived_before: datetime | None = None) -> date | None:
        """The newest day accepted so far, among batches that arrived before ``arrived_before``."""
        q = select(func.max(batches.c.day)).where(batches.c.model_name == model, batches.c.status == "accepted")
        if arrived_before is not None:
            q = q.where(func.coalesce(batches.c.arrived_at, batches.c.received_at) < arrived_before)
        with self.engine.connect() as conn:
            value = conn.execute(q).scalar_one()
        return value

    def known_entity_ids(self, model: str, ids: Iterable[str], exclude_batch: int) -> list[str]:
        """Which of ``ids`` already have ground truth from another batch."""
        wanted = list(dict.fromkeys(ids))
        found: list[str] = []
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                found.extend(
                    conn.execute(
                        select(ground_truth.c.entity_id).where(
                            ground_truth.c.model_name == model,
                            ground_truth.c.entity_id.in_(chunk),
                            ground_truth.c.batch_id != exclude_batch,
                        )
                    ).scalars()
                )
        return found

    def set_batch_day(self, batch_id: int, day: date | None, rows: int | None) -> None:
        with self.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(day=day, rows=rows))

    def accept_batch(
        self,
        batch_id: int,
        model: str,
        day: date,
        pool_path: str,
        truth: list[dict[str, Any]],
        decision: Decision,
        profile: dict[str, Any] | None = None,
    ) -> None:
        """Ground truth rows, the accepted verdict and its decision (and the batch's summary
        statistics for the learned profile), in one transaction (re-runnable)."""
        with self.begin() as conn:
            conn.execute(ground_truth.delete().where(ground_truth.c.batch_id == batch_id))
            for i in range(0, len(truth), 1000):
                conn.execute(
                    insert(ground_truth), [{**r, "model_name": model, "batch_id": batch_id, "day": day} for r in truth[i : i + 1000]]
                )
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(status="accepted", reason_codes=[], decided_at=utcnow(), pool_path=pool_path, day=day, rows=len(truth))
            )
            if profile is not None:
                conn.execute(update(batches).where(batches.c.id == batch_id).values(profile=jsonable(profile)))
            insert_decision(conn, decision)

    def quarantine_batch(
        self,
        batch_id: int,
        model: str,
        file_name: str,
        reasons: list[dict[str, Any]],
        file_path: str,
        report_path: str | None,
        decision: Decision,
    ) -> bool:
        """Record the quarantine verdict and its decision; returns False when it was already recorded."""
        codes = sorted({r["code"] for r in reasons})
        with self.begin() as conn:
            conn.execute(
                update(batches).where(batches.c.id == batch_id).values(status="quarantined", reason_codes=codes, decided_at=utcnow())
            )
            exists = conn.execute(select(quarantine.c.id).where(quarantine.c.batch_id == batch_id)).first()
            if exists:
                return False
            conn.execute(
                insert(quarantine).values(
                    batch_id=batch_id,
                    model_name=model,
                    file_name=file_name,
                    reason_codes=codes,
                    reasons=reasons,
                    file_path=file_path,
                    report_path=report_path,
                    created_at=utcnow(),
                )
            )
            insert_decision(conn, decision)
            return True

    def mark_moved(self, batch_id: int, archive_path: str) -> None:
        with self.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(moved_at=utcnow(), archive_path=archive_path))

    def list_batches(self, model: str | None = None) -> list[dict[str, Any]]:
        q = select(batches).order_by(batches.c.id)
        if model:
            q = q.where(batches.c.model_name == model)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def list_quarantine(self, model: str | None = None) -> list[dict[str, Any]]:
        q = select(quarantine).order_by(quarantine.c.id)
        if model:
            q = q.where(quarantine.c.model_name == model)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def count_accepted_batches(self, model: str, decided_after: datetime | None = None) -> int:
        """Batches accepted (after ``decided_after``, when given)."""
        q = select(func.count()).select_from(batches).where(batches.c.model_name == model, batches.c.status == "accepted")
        if decided_after is not None:
            q = q.where(batches.c.decided_at > decided_after)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def count_ground_truth(self, model: str, event_from: datetime | None = None) -> int:
        """Labelled rows of ``model`` (with event time at or after ``event_from``, when given)."""
        q = select(func.count()).select_from(ground_truth).where(ground_truth.c.model_name == model)
        if event_from is not None:
            q = q.where(ground_truth.c.event_time >= event_from)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    # -- validation attempts (a file that crashes validation is quarantined after N of them) --------
    def start_attempt(self, batch_id: int) -> int:
        """Count one more validation attempt of the batch (committed before validating, so a worker
        killed mid-validation counts too); returns the attempts so far, this one included."""
        with self.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(attempts=func.coalesce(batches.c.attempts, 0) + 1))
            return int(conn.execute(select(batches.c.attempts).where(batches.c.id == batch_id)).scalar_one())

    def finish_attempt(self, batch_id: int) -> None:
        """The attempt finished validating (whatever the verdict): it is not counted against the
        file (``attempts`` counts the attempts that crashed or died)."""
        with self.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id, batches.c.attempts > 0).values(attempts=batches.c.attempts - 1))

    def record_attempt_error(self, batch_id: int, error: str) -> None:
        """What the last crashed validation attempt raised."""
        with self.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(last_error=error[:2000]))

    # -- the learned batch profile ---------------------------------------------------------------
    def accepted_batch_profiles(self, model: str, limit: int, exclude_id: int | None = None) -> list[dict[str, Any]]:
        """The ``limit`` most recent accepted batches (by day) of ``model``: id, day, pool path and
        stored summary statistics (``profile``: None for a batch accepted before schema version 6)."""
        q = (
            select(batches.c.id, batches.c.day, batches.c.pool_path, batches.c.profile)
            .where(batches.c.model_name == model, batches.c.status == "accepted")
            .order_by(batches.c.day.desc(), batches.c.id.desc())
            .limit(limit)
        )
        if exclude_id is not None:
            q = q.where(batches.c.id != exclude_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def set_batch_profile(self, batch_id: int, profile: dict[str, Any]) -> None:
        with self.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(profile=jsonable(profile)))

    def count_logged_entities(self, model: str, ids: Iterable[str]) -> int:
        """How many of ``ids`` have a successful prediction of ``model`` in the inference log (the
        batch's join rate with logged predictions is this over its rows). Looked up by entity id
        alone (its index), the model and status filtered here: SQLite's planner otherwise scans
        the model's whole log through the (model, version, time) index."""
        wanted = list(dict.fromkeys(ids))
        found: set[str] = set()
        c = inference_log.c
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                rows = conn.execute(select(c.entity_id, c.model_name, c.status).where(c.entity_id.in_(wanted[i : i + 500]))).all()
                found.update(e for e, m, status in rows if m == model and status == "ok")
        return len(found)
