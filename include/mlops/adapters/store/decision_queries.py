"""Decisions: every gate and policy outcome, with its inputs and a reason code.

A decision names what it is about twice: ``subject`` is text for people ("version 3 / probe",
"v3 2013-02-08T00:00..2013-02-15T00:00"); ``version``, ``window_start`` and ``window_end`` are
what code looks decisions up by. Nothing reads the subject back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, false, func, insert, or_, select

from include.mlops.adapters.store.base import StoreBase, jsonable, naive_utc, new_id
from include.mlops.adapters.store.schema import decisions, utcnow


@dataclass(frozen=True)
class Decision:
    """An outcome of a gate or policy, with the inputs it was decided on and a reason code."""

    model_name: str
    kind: str
    outcome: str
    reason_code: str
    subject: str | None = None
    reasons: list[Any] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)
    report_uri: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    version: int | str | None = None  # the model version decided about (a registry version: digits)
    window_start: datetime | None = None  # the window of traffic judged
    window_end: datetime | None = None


def insert_decision(conn: Connection, d: Decision) -> int:
    """Write ``d`` in the caller's transaction; returns its id."""
    result = conn.execute(
        insert(decisions).values(
            model_name=d.model_name,
            kind=d.kind,
            subject=d.subject,
            version=None if d.version is None else int(d.version),
            window_start=naive_utc(d.window_start),
            window_end=naive_utc(d.window_end),
            outcome=d.outcome,
            reason_code=d.reason_code,
            reasons=jsonable(d.reasons),
            inputs=jsonable(d.inputs),
            report_uri=d.report_uri,
            dag_id=d.dag_id,
            run_id=d.run_id,
            created_at=utcnow(),
        )
    )
    return new_id(result)


class DecisionQueries(StoreBase):
    def record_decision(
        self,
        model: str,
        kind: str,
        outcome: str,
        reason_code: str,
        *,
        subject: str | None = None,
        reasons: list[Any] | None = None,
        inputs: dict[str, Any] | None = None,
        report_uri: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        version: int | str | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
    ) -> int:
        decision = Decision(
            model, kind, outcome, reason_code, subject, reasons or [], inputs or {}, report_uri, dag_id, run_id,
            version, window_start, window_end,
        )  # fmt: skip
        with self.begin() as conn:
            return insert_decision(conn, decision)

    def list_decisions(self, model: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(decisions).order_by(decisions.c.id)
        if model:
            q = q.where(decisions.c.model_name == model)
        if kind:
            q = q.where(decisions.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def decision_exists(
        self,
        model: str,
        kind: str,
        *,
        version: int | str | None = None,
        window_start: datetime | None = None,
        window_end: datetime | None = None,
    ) -> bool:
        """Is there a decision of this kind on this version and/or window (each filter optional)?"""
        q = select(func.count()).select_from(decisions).where(decisions.c.model_name == model, decisions.c.kind == kind)
        if version is not None:
            q = q.where(decisions.c.version == int(version))
        if window_start is not None:
            q = q.where(decisions.c.window_start == naive_utc(window_start))
        if window_end is not None:
            q = q.where(decisions.c.window_end == naive_utc(window_end))
        with self.engine.connect() as conn:
            return bool(conn.execute(q).scalar_one())

    def last_decision(self, model: str, kind: str) -> dict[str, Any] | None:
        """The newest decision of this kind."""
        q = select(decisions).where(decisions.c.model_name == model, decisions.c.kind == kind).order_by(decisions.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def decided_since(self, model: str, since: datetime, outcomes: Mapping[str, Collection[str]]) -> bool:
        """Was any decision of ``outcomes`` (kind -> its outcomes that count) recorded at or after ``since``?"""
        match = or_(false(), *((decisions.c.kind == kind) & decisions.c.outcome.in_(list(outs)) for kind, outs in outcomes.items()))
        q = select(func.count()).select_from(decisions).where(decisions.c.model_name == model, decisions.c.created_at >= since, match)
        with self.engine.connect() as conn:
            return bool(conn.execute(q).scalar_one())
