"""The ops store's schema: its tables, the schema version, the migrations, the engine.

It keeps what no other tool keeps: label batches and their validation verdicts, quarantine
records, the inference log, ground truth, the append-only deployment ledger, decisions (every gate
and policy outcome with its inputs and a reason code), alerts, and governance state.

Schema versions: a new database is created at the latest version and stamped with it; an older
database is brought forward by the ordered functions in ``MIGRATIONS``. To change a table, edit
its definition here *and* append a migration that makes the same change to an existing
database (see docs/architecture.md, "Ops store").
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
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

from include.mlops.domain.clock import utcnow  # re-exported: the store's query modules import it from here

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
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),  # validation attempts that crashed or died
    Column("last_error", Text),  # what the last crashed attempt raised
    Column("profile", JSON),  # the batch's summary statistics, what the learned batch profile is built from
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
    Column("latency_ms", Float),  # the request's latency (arrival to answer)
    Column("model_ms", Float),  # the scoring version's own predict call that scored this row (v8)
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
    Column("subject", String(250)),  # what was decided about, for people: a batch, a model version, a window
    Column("version", Integer),  # the model version decided about, when there is one
    Column("window_start", DateTime),  # the window of traffic judged (monitoring), when there is one
    Column("window_end", DateTime),
    Column("outcome", String(50), nullable=False),
    Column("reason_code", String(100), nullable=False),
    Column("reasons", JSON, nullable=False, default=list),
    Column("inputs", JSON, nullable=False, default=dict),
    Column("report_uri", Text),
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("created_at", DateTime, nullable=False),
    Index("ix_decisions_model_kind", "model_name", "kind", "id"),
    Index("ix_decisions_version", "model_name", "kind", "version"),
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

#: The sha256 of each registered version's model file, recorded by the loop when it registers the
#: version (training), with the skops types it trusted then; every load checks the file against it.
model_digests = Table(
    "model_digests",
    metadata,
    Column("model_name", String(100), primary_key=True),
    Column("version", String(20), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("model_file", String(255), nullable=False),
    Column("trusted_types", JSON, nullable=False, default=list),
    Column("recorded_by", String(250)),
    Column("recorded_at", DateTime, nullable=False),
)

#: One row per model while an alias change is under way: who holds the lock, until when.
alias_locks = Table(
    "alias_locks",
    metadata,
    Column("model_name", String(100), primary_key=True),
    Column("owner", String(250), nullable=False),
    Column("acquired_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

#: Realized quality of a judged window, revised when labels arrive after its ``monitor`` verdict
#: (steps/monitoring/revision.py): one row per revision, the verdict itself stays as it was.
window_quality = Table(
    "window_quality",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_name", String(100), nullable=False),
    Column("version", String(20), nullable=False),
    Column("window_start", DateTime, nullable=False),
    Column("window_end", DateTime, nullable=False),
    Column("decision_id", Integer, nullable=False),  # the monitor decision (first verdict) revised
    Column("labelled_rows", Integer, nullable=False),
    Column("metric", String(50), nullable=False),
    Column("value", Float),  # None while too few labels (never NaN)
    Column("holdout", Float),
    Column("status", String(30), nullable=False),  # measured | waiting_for_labels
    Column("decayed", Integer, nullable=False, default=0),  # 1: the revised value shows a decay the verdict missed
    Column("reason_code", String(50)),  # decay_revised: a decay the first verdict missed
    Column("quality", JSON, nullable=False, default=dict),  # the revised quality in full (JSON-safe)
    Column("dag_id", String(250)),
    Column("run_id", String(250)),
    Column("revised_at", DateTime, nullable=False),
    Index("ix_window_quality_key", "model_name", "version", "window_end"),
)

LATEST_VERSION = 8


def _v2_batches_arrived_at(conn: Connection) -> None:
    """Staleness is judged in the order batches *arrived*, not the order they were validated in."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE batches ADD COLUMN arrived_at TIMESTAMP"))
    conn.execute(text("UPDATE batches SET arrived_at = received_at"))


def _v3_log_journal(conn: Connection) -> None:
    """The serving journal's checkpoints."""
    log_journal.create(conn)


#: The model version at the start of a subject: "v3 ..." (monitoring), "version 3 ..." (the others).
_SUBJECT_VERSION = re.compile(r"^v(?:ersion )?(\d+)\b")
#: The window of a monitoring subject: "v3 2013-02-08T00:00..2013-02-15T00:00".
_SUBJECT_WINDOW = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?)\.\.(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?)")


def parse_legacy_subject(subject: str | None) -> dict[str, Any]:
    """The version and window a decision written before schema version 4 names in its subject.

    Only the v4 migration reads subjects: since then they are plain text for people, and the
    version and window have their own columns."""
    found: dict[str, Any] = {}
    if not subject:
        return found
    version = _SUBJECT_VERSION.match(subject)
    if version:
        found["version"] = int(version.group(1))
    window = _SUBJECT_WINDOW.search(subject)
    if window:
        found["window_start"] = datetime.fromisoformat(window.group(1))
        found["window_end"] = datetime.fromisoformat(window.group(2))
    return found


def _v4_decision_keys(conn: Connection) -> None:
    """decisions.version, window_start, window_end: the join keys, back-filled from the subject."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE decisions ADD COLUMN version INTEGER"))
    conn.execute(text("ALTER TABLE decisions ADD COLUMN window_start TIMESTAMP"))
    conn.execute(text("ALTER TABLE decisions ADD COLUMN window_end TIMESTAMP"))
    conn.execute(text("CREATE INDEX ix_decisions_version ON decisions (model_name, kind, version)"))
    rows = conn.execute(select(decisions.c.id, decisions.c.subject).where(decisions.c.subject.is_not(None))).all()
    filled = 0
    for row_id, subject in rows:
        keys = parse_legacy_subject(subject)
        if keys:
            conn.execute(update(decisions).where(decisions.c.id == row_id).values(**keys))
            filled += 1
    log.info("back-filled version/window of %s of %s decisions from their subject", filled, len(rows))


def _v5_digests_and_alias_locks(conn: Connection) -> None:
    """model_digests (the sha256 checked at every model load) and alias_locks (one alias change at a time)."""
    model_digests.create(conn)
    alias_locks.create(conn)


def _v6_batch_attempts_and_profile(conn: Connection) -> None:
    """batches.attempts, last_error (a file that crashes validation is quarantined after N attempts)
    and batches.profile (the summary statistics the learned batch profile is built from)."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE batches ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"))
    conn.execute(text("ALTER TABLE batches ADD COLUMN last_error TEXT"))
    conn.execute(text("ALTER TABLE batches ADD COLUMN profile JSON"))


def _v7_window_quality(conn: Connection) -> None:
    """window_quality: the realized quality of judged windows, revised as late labels arrive."""
    window_quality.create(conn)


def _v8_inference_model_ms(conn: Connection) -> None:
    """inference_log.model_ms: each version's own inference time (the early window's latency ratio)."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE inference_log ADD COLUMN model_ms FLOAT"))


#: (version, description, function that brings a database from version-1 to version).
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (2, "batches.arrived_at: the delivery order, for staleness", _v2_batches_arrived_at),
    (3, "log_journal: checkpoints of the serving API's write-ahead journal", _v3_log_journal),
    (4, "decisions.version, window_start, window_end: join keys instead of the subject text", _v4_decision_keys),
    (5, "model_digests and alias_locks: verified model loads, serialized alias changes", _v5_digests_and_alias_locks),
    (6, "batches.attempts, last_error, profile: bounded validation retries, the learned batch profile", _v6_batch_attempts_and_profile),
    (7, "window_quality: realized quality of judged windows revised by late labels", _v7_window_quality),
    (8, "inference_log.model_ms: each model version's own inference time per row", _v8_inference_model_ms),
]
_INITIAL_DESCRIPTION = "initial schema: batches, quarantine, ground truth, inference log, ledger, decisions, alerts, governance"


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
