"""Realized quality of judged windows, revised when labels arrive after the window's verdict.

A ``monitor`` decision records the realized quality from the labels that had arrived when the
window was judged; ``window_quality`` holds the revisions recomputed on the labels present later
(one row per revision, the verdict itself is never changed). The queries here find the recent
judged windows, count their labelled predictions cheaply (the change detector) and record and
read the revisions.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select

from include.mlops.adapters.store.base import StoreBase, jsonable, naive_utc, new_id
from include.mlops.adapters.store.schema import decisions, ground_truth, inference_log, utcnow, window_quality

#: (version, window_start, window_end): how a judged window is keyed.
WindowKey = tuple[str, datetime, datetime]


def window_key(row: dict[str, Any]) -> WindowKey:
    """The key of a decision or ``window_quality`` row (naive UTC, version as text)."""
    return str(row["version"]), row["window_start"], row["window_end"]


class WindowQualityQueries(StoreBase):
    def recent_window_decisions(self, model: str, windows: int, kind: str = "monitor") -> list[dict[str, Any]]:
        """The decisions of ``kind`` on the ``windows`` most recent windows (by window end, every
        version judged on them), in id order."""
        ends = (
            select(decisions.c.window_end)
            .where(decisions.c.model_name == model, decisions.c.kind == kind, decisions.c.window_end.is_not(None))
            .group_by(decisions.c.window_end)
            .order_by(decisions.c.window_end.desc())
            .limit(windows)
        )
        with self.engine.connect() as conn:
            recent = list(conn.execute(ends).scalars())
            if not recent:
                return []
            q = (
                select(decisions)
                .where(decisions.c.model_name == model, decisions.c.kind == kind, decisions.c.window_end >= min(recent))
                .order_by(decisions.c.id)
            )
            return [dict(r) for r in conn.execute(q).mappings()]

    def count_labelled(
        self, model: str, version: str, *, event_from: datetime, event_to: datetime, routes: Iterable[str], exclude_prefix: str
    ) -> int:
        """Distinct entities of ``version``'s successful predictions on these routes with event time
        in [``event_from``, ``event_to``) that have ground truth, entity ids starting with
        ``exclude_prefix`` left out: the row count realized quality is computed on, without the rows."""
        q = (
            select(func.count(func.distinct(inference_log.c.entity_id)))
            .select_from(inference_log)
            .join(
                ground_truth,
                and_(ground_truth.c.entity_id == inference_log.c.entity_id, ground_truth.c.model_name == inference_log.c.model_name),
            )
            .where(
                inference_log.c.model_name == model,
                inference_log.c.model_version == str(version),
                inference_log.c.status == "ok",
                inference_log.c.route.in_(list(routes)),
                inference_log.c.event_time >= naive_utc(event_from),
                inference_log.c.event_time < naive_utc(event_to),
                ~inference_log.c.entity_id.startswith(exclude_prefix, autoescape=True),
            )
        )
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def record_window_quality(
        self,
        model: str,
        key: WindowKey,
        *,
        decision_id: int,
        quality: dict[str, Any],
        decayed: bool,
        reason_code: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> int:
        """One revision of a judged window's realized quality (``quality`` as ``checks.quality_of``
        returns it, JSON-safe: no NaN or infinity)."""
        version, start, end = key
        value = quality.get("live")
        row = {
            "model_name": model,
            "version": str(version),
            "window_start": naive_utc(start),
            "window_end": naive_utc(end),
            "decision_id": int(decision_id),
            "labelled_rows": int(quality.get("labelled_rows") or 0),
            "metric": str(quality.get("metric") or ""),
            "value": None if value is None else float(value),
            "holdout": None if quality.get("holdout") is None else float(quality["holdout"]),
            "status": str(quality.get("status") or "measured"),
            "decayed": int(bool(decayed)),
            "reason_code": reason_code,
            "quality": jsonable(quality),
            "dag_id": dag_id,
            "run_id": run_id,
            "revised_at": utcnow(),
        }
        with self.begin() as conn:
            return new_id(conn.execute(insert(window_quality).values(**row)))

    def list_window_quality(self, model: str, version: str | None = None) -> list[dict[str, Any]]:
        """Every revision of ``model``'s windows (of one version), in the order they were made."""
        q = select(window_quality).where(window_quality.c.model_name == model).order_by(window_quality.c.id)
        if version is not None:
            q = q.where(window_quality.c.version == str(version))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def latest_window_quality(self, model: str, version: str | None = None) -> dict[WindowKey, dict[str, Any]]:
        """The newest revision of each revised window of ``model`` (of one version)."""
        newest = select(func.max(window_quality.c.id)).where(window_quality.c.model_name == model)
        if version is not None:
            newest = newest.where(window_quality.c.version == str(version))
        newest = newest.group_by(window_quality.c.version, window_quality.c.window_start, window_quality.c.window_end)
        q = select(window_quality).where(window_quality.c.id.in_(newest)).order_by(window_quality.c.id)
        with self.engine.connect() as conn:
            return {window_key(dict(r)): dict(r) for r in conn.execute(q).mappings()}
