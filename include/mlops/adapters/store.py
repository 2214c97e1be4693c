"""The ops store: the loop's own state, in SQLAlchemy, on SQLite by default or any SQL database.

It keeps what no other tool keeps: label batches and their validation verdicts, quarantine
records, the inference log, ground truth, the append-only deployment ledger, decisions (every gate
and policy outcome with its inputs and a reason code), alerts, and governance state.

Schema versions: a new database is created at the latest version and stamped with it; an older
database is brought forward by the ordered functions in ``MIGRATIONS``. To change a table, edit
its definition here *and* append a migration that makes the same change to an existing
database (see the README, "Ops store").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)

log = logging.getLogger(__name__)

metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)

#: One row per delivered label-batch file.
batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_name", String(100), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("content_sha256", String(64), nullable=False),
    Column("day", Date),
    Column("status", String(20), nullable=False),  # validating | accepted | quarantined
    Column("rows", Integer),
    Column("reason_codes", JSON, nullable=False, default=list),
    Column("received_at", DateTime, nullable=False),
    Column("arrived_at", DateTime),  # when the file landed (its mtime): the order of deliveries
    Column("decided_at", DateTime),
    Column("moved_at", DateTime),  # when the file left the landing folder
    Column("pool_path", Text),
    Column("archive_path", Text),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Index("ix_batches_sha", "model_name", "content_sha256"),
    Index("ix_batches_day", "model_name", "day"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, nullable=False, unique=True),
    Column("model_name", String(100), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("reason_codes", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),  # [{code, column, message}]
    Column("file_path", Text, nullable=False),
    Column("report_path", Text),
    Column("created_at", DateTime, nullable=False),
)

ground_truth = Table(
    "ground_truth",
    metadata,
    Column("model_name", String(100), primary_key=True),
    Column("entity_id", String(200), primary_key=True),
    Column("event_time", DateTime, nullable=False),
    Column("label", Integer, nullable=False),
    Column("outcome", Float),
    Column("batch_id", Integer, nullable=False),
    Column("day", Date, nullable=False),
    Index("ix_ground_truth_batch", "batch_id"),
    Index("ix_ground_truth_time", "model_name", "event_time"),
)

inference_log = Table(
    "inference_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("entity_id", String(200)),
    Column("model_name", String(100), nullable=False),
    Column("model_version", String(20)),
    Column("route", String(20), nullable=False),  # champion | challenger | shadow
    Column("event_time", DateTime),
    Column("features", JSON),
    Column("score", Float),
    Column("prediction", Integer),
    Column("latency_ms", Float),
    Column("status", String(20), nullable=False),  # ok | error | rejected
    Column("error", Text),
    Column("created_at", DateTime, nullable=False),
    Index("ix_inference_version_time", "model_name", "model_version", "event_time"),
    Index("ix_inference_entity", "entity_id"),
    Index("ix_inference_created", "created_at"),
)

#: Append-only: every alias change, with who made it and why.
deployment_ledger = Table(
    "deployment_ledger",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_name", String(100), nullable=False),
    Column("alias", String(50), nullable=False),
    Column("action", String(20), nullable=False),  # set | removed
    Column("from_version", String(20)),
    Column("to_version", String(20)),
    Column("strategy", String(20)),
    Column("reason", Text),
    Column("actor", String(250)),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("op_key", String(250), unique=True),  # idempotency key of the change
    Column("created_at", DateTime, nullable=False),
    Index("ix_ledger_model", "model_name", "id"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_name", String(100), nullable=False),
    Column("kind", String(50), nullable=False),  # ingest | gate | early_window | promotion | monitor | governance
    Column("subject", String(250)),  # what was decided about: a batch, a model version, a window
    Column("outcome", String(50), nullable=False),
    Column("reason_code", String(100), nullable=False),
    Column("reasons", JSON, nullable=False, default=list),
    Column("inputs", JSON, nullable=False, default=dict),
    Column("report_uri", Text),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("created_at", DateTime, nullable=False),
    Index("ix_decisions_model_kind", "model_name", "kind", "id"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_name", String(100), nullable=False),
    Column("severity", String(20), nullable=False),  # info | warning | critical
    Column("kind", String(50), nullable=False),
    Column("dedupe_key", String(250), nullable=False),
    Column("message", Text, nullable=False),
    Column("payload", JSON, nullable=False, default=dict),
    Column("status", String(20), nullable=False, default="open"),  # open | resolved
    Column("count", Integer, nullable=False, default=1),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("delivered_at", DateTime),
    Index("ix_alerts_dedupe", "model_name", "dedupe_key", "status"),
)

governance_state = Table(
    "governance_state",
    metadata,
    Column("model_name", String(100), primary_key=True),
    Column("key", String(100), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

#: How many records of each serving journal file are in ``inference_log`` (serving/journal.py):
#: written in the same transaction as the records, so a replay after a crash adds each once.
log_journal = Table(
    "log_journal",
    metadata,
    Column("segment", String(100), primary_key=True),
    Column("records", Integer, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

LATEST_VERSION = 3


def _v2_batches_arrived_at(conn: Connection) -> None:
    """Staleness is judged in the order batches *arrived*, not the order they were validated in."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE batches ADD COLUMN arrived_at TIMESTAMP"))
    conn.execute(text("UPDATE batches SET arrived_at = received_at"))


def _v3_log_journal(conn: Connection) -> None:
    """The serving journal's checkpoints."""
    log_journal.create(conn)


#: (version, description, function that brings a database from version-1 to version).
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (2, "batches.arrived_at: the delivery order, for staleness", _v2_batches_arrived_at),
    (3, "log_journal: checkpoints of the serving API's write-ahead journal", _v3_log_journal),
]
_INITIAL_DESCRIPTION = "initial schema: batches, quarantine, ground truth, inference log, ledger, decisions, alerts, governance"


def utcnow() -> datetime:
    """Naive UTC now: every wall-clock timestamp in the ops store is naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


_engines: dict[str, Engine] = {}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process."""
    engine = _engines.get(url)
    if engine is None:
        if url.startswith("sqlite"):
            from pathlib import Path

            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        _engines[url] = engine
    return engine


def current_version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, "schema_version"):
        return 0
    return int(conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one())


def migrate(engine: Engine) -> int:
    """Create or upgrade the schema; returns the version the database is at."""
    with engine.begin() as conn:
        version = current_version(conn)
        if version == 0 and conn.dialect.has_table(conn, "batches"):
            raise RuntimeError("the ops store has tables but no schema_version row: it was not created by this project")
        if version == 0:
            metadata.create_all(conn)
            conn.execute(insert(schema_version).values(version=LATEST_VERSION, description=_INITIAL_DESCRIPTION, applied_at=utcnow()))
            log.info("created ops store schema at version %s", LATEST_VERSION)
            return LATEST_VERSION
        if version > LATEST_VERSION:
            raise RuntimeError(f"the ops store is at schema version {version}, newer than this code ({LATEST_VERSION}): upgrade the code")
        for target, description, step in MIGRATIONS:
            if target > version:
                step(conn)
                conn.execute(insert(schema_version).values(version=target, description=description, applied_at=utcnow()))
                log.info("migrated ops store to schema version %s: %s", target, description)
                version = target
        return version


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


def _new_id(result: Any) -> int:
    """Primary key of the row an INSERT just created."""
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every table here has an integer key
        raise RuntimeError("insert returned no primary key")
    return int(key[0])


def _insert_decision(conn: Connection, d: Decision) -> int:
    result = conn.execute(
        insert(decisions).values(
            model_name=d.model_name,
            kind=d.kind,
            subject=d.subject,
            outcome=d.outcome,
            reason_code=d.reason_code,
            reasons=_jsonable(d.reasons),
            inputs=_jsonable(d.inputs),
            report_uri=d.report_uri,
            dag_id=d.dag_id,
            run_id=d.run_id,
            created_at=utcnow(),
        )
    )
    return _new_id(result)


@dataclass
class Store:
    """Typed access to the ops store for one database URL."""

    engine: Engine

    @classmethod
    def open(cls, url: str) -> Store:
        """Open (creating or migrating the schema if needed) the ops store at ``url``."""
        engine = get_engine(url)
        migrate(engine)
        return cls(engine)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- batches and quarantine -------------------------------------------------------------
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
            return _new_id(result)

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

    def accept_batch(self, batch_id: int, model: str, day: date, pool_path: str, truth: list[dict[str, Any]], decision: Decision) -> None:
        """Ground truth rows, the accepted verdict and its decision, in one transaction (re-runnable)."""
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
            _insert_decision(conn, decision)

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
            _insert_decision(conn, decision)
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

    def count_ground_truth(self, model: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ground_truth).where(ground_truth.c.model_name == model)).scalar_one())

    # -- deployment ledger ----------------------------------------------------------------------
    def ledger_entry(self, op_key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(deployment_ledger).where(deployment_ledger.c.op_key == op_key)).mappings().first()
        return dict(row) if row else None

    def ledger_latest(self, model: str, alias: str) -> dict[str, Any] | None:
        """The last ledger row of ``alias``: its ``to_version`` is who holds the alias, per the ledger."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(deployment_ledger)
                    .where(deployment_ledger.c.model_name == model, deployment_ledger.c.alias == alias)
                    .order_by(deployment_ledger.c.id.desc())
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def append_ledger(
        self,
        *,
        model: str,
        alias: str,
        action: str,
        from_version: str | None,
        to_version: str | None,
        strategy: str | None,
        reason: str,
        actor: str,
        op_key: str,
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Append one alias change; a second call with the same ``op_key`` returns the first row."""
        existing = self.ledger_entry(op_key)
        if existing:
            return existing
        with self.begin() as conn:
            result = conn.execute(
                insert(deployment_ledger).values(
                    model_name=model,
                    alias=alias,
                    action=action,
                    from_version=from_version,
                    to_version=to_version,
                    strategy=strategy,
                    reason=reason,
                    actor=actor,
                    dag_id=dag_id,
                    run_id=run_id,
                    op_key=op_key,
                    created_at=utcnow(),
                )
            )
            new_id = _new_id(result)
        row = self.ledger_entry(op_key)
        assert row is not None and row["id"] == new_id
        return row

    def list_ledger(self, model: str | None = None, alias: str | None = None) -> list[dict[str, Any]]:
        q = select(deployment_ledger).order_by(deployment_ledger.c.id)
        if model:
            q = q.where(deployment_ledger.c.model_name == model)
        if alias:
            q = q.where(deployment_ledger.c.alias == alias)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    # -- decisions and alerts -----------------------------------------------------------------
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
    ) -> int:
        with self.begin() as conn:
            return _insert_decision(
                conn,
                Decision(model, kind, outcome, reason_code, subject, reasons or [], inputs or {}, report_uri, dag_id, run_id),
            )

    def list_decisions(self, model: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(decisions).order_by(decisions.c.id)
        if model:
            q = q.where(decisions.c.model_name == model)
        if kind:
            q = q.where(decisions.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def upsert_alert(
        self, model: str, severity: str, kind: str, dedupe_key: str, message: str, payload: dict[str, Any]
    ) -> tuple[int, bool]:
        """Open a new alert, or bump the open one with the same dedupe key. Returns (id, is_new)."""
        now = utcnow()
        with self.begin() as conn:
            row = conn.execute(
                select(alerts.c.id).where(alerts.c.model_name == model, alerts.c.dedupe_key == dedupe_key, alerts.c.status == "open")
            ).first()
            if row:
                conn.execute(
                    update(alerts)
                    .where(alerts.c.id == row.id)
                    .values(count=alerts.c.count + 1, last_seen=now, message=message, payload=_jsonable(payload))
                )
                return int(row.id), False
            result = conn.execute(
                insert(alerts).values(
                    model_name=model,
                    severity=severity,
                    kind=kind,
                    dedupe_key=dedupe_key,
                    message=message,
                    payload=_jsonable(payload),
                    status="open",
                    count=1,
                    first_seen=now,
                    last_seen=now,
                )
            )
            return _new_id(result), True

    def list_alerts(self, model: str | None = None) -> list[dict[str, Any]]:
        q = select(alerts).order_by(alerts.c.id)
        if model:
            q = q.where(alerts.c.model_name == model)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    # -- alert delivery (include/mlops/adapters/alerts.py): delivered_at is the delivery state -------------
    # NULL = not delivered yet (pending); a time = last successful delivery (opening or reminder).
    def get_alert(self, alert_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).mappings().first()
        return dict(row) if row else None

    def claim_alert_delivery(self, alert_id: int, *, now: datetime, due_before: datetime | None = None) -> bool:
        """Mark an open alert as delivered at ``now`` before sending it, if it is due: never delivered,
        or (with ``due_before``) last delivered at or before that time. Atomic, so of two processes
        raising the same alert at once only one sends it. False: not due (or already claimed)."""
        never = alerts.c.delivered_at.is_(None)
        due = never if due_before is None else never | (alerts.c.delivered_at <= due_before)
        with self.begin() as conn:
            result = conn.execute(update(alerts).where(alerts.c.id == alert_id, alerts.c.status == "open", due).values(delivered_at=now))
            return bool(result.rowcount == 1)

    def release_alert_delivery(self, alert_id: int, *, claimed_at: datetime, previous: datetime | None) -> None:
        """Undo a claim whose delivery failed: the alert is due again (pending when ``previous`` is None)."""
        with self.begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id, alerts.c.delivered_at == claimed_at).values(delivered_at=previous))

    def find_open_alert(self, model: str, dedupe_key: str) -> dict[str, Any] | None:
        """The open alert with this dedupe key, if any."""
        q = select(alerts).where(alerts.c.model_name == model, alerts.c.dedupe_key == dedupe_key, alerts.c.status == "open")
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def set_alert_severity(self, alert_id: int, severity: str) -> None:
        """Escalate an open alert (a repeat came in at a higher severity)."""
        with self.begin() as conn:
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values(severity=severity))

    def pending_alerts(
        self, model: str | None = None, *, severities: Iterable[str], since: datetime | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Open alerts of these severities never delivered (last seen at or after ``since``), oldest first."""
        q = (
            select(alerts)
            .where(alerts.c.status == "open", alerts.c.delivered_at.is_(None), alerts.c.severity.in_(list(severities)))
            .order_by(alerts.c.id)
            .limit(limit)
        )
        if model:
            q = q.where(alerts.c.model_name == model)
        if since is not None:
            q = q.where(alerts.c.last_seen >= since)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def resolve_alerts(
        self, model: str, *, kind: str | None = None, dedupe_key: str | None = None, dedupe_prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Close the open alerts of ``model`` matching every given filter (at least one is required);
        returns them as they were before closing. The next occurrence opens a new alert."""
        if kind is None and dedupe_key is None and dedupe_prefix is None:
            raise ValueError("resolve_alerts needs kind, dedupe_key or dedupe_prefix (refusing to close every open alert)")
        q = select(alerts).where(alerts.c.model_name == model, alerts.c.status == "open")
        if kind is not None:
            q = q.where(alerts.c.kind == kind)
        if dedupe_key is not None:
            q = q.where(alerts.c.dedupe_key == dedupe_key)
        if dedupe_prefix is not None:
            q = q.where(alerts.c.dedupe_key.startswith(dedupe_prefix, autoescape=True))
        with self.begin() as conn:
            rows = [dict(r) for r in conn.execute(q.order_by(alerts.c.id)).mappings()]
            if rows:
                conn.execute(
                    update(alerts).where(alerts.c.id.in_([r["id"] for r in rows]), alerts.c.status == "open").values(status="resolved")
                )
        return rows


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars, dates and paths are stored as plain values."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)
