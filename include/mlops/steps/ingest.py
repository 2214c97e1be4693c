"""Ingest labelled outcome batches: validate, then accept into the training pool or quarantine.

Each file in the landing folder is one *delivery*. A delivery is validated by the spec's Great
Expectations suite plus the checks only the ops store can answer (the same content already
accepted, a second batch for an accepted day, a stale day, ids that already have labels).

* accepted: rows (with the derived label) written to ``pool/day=<day>/batch-<id>.parquet``,
  ground truth rows stored for later joins, the file archived;
* quarantined: the file moved aside untouched, a readable report and the GX result kept, a
  quarantine record with machine-readable reasons, an alert.

A delivery must be a regular file: symbolic links and special files are quarantined unread, as
are files over the spec's size limits (a parquet file's row count and uncompressed size are read
from its metadata first). A batch the spec accepts is then judged against the profile learned from
the accepted history (``ingest_guard.profile_verdict``). A file whose validation crashes stays in
landing (``deferred``) and is quarantined as ``validation_crashed`` after the spec's attempts.

Every step is safe to re-run: a retry after a crash finds the delivery's record by name and
content hash and finishes it, without duplicate rows, a second quarantine record, or a second
decision. A later delivery with the content of an accepted batch is quarantined as a duplicate.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from include.mlops.adapters.alerts import raise_alert
from include.mlops.adapters.lake import READY_MARKER, Lake, atomic_write_bytes, atomic_write_text
from include.mlops.adapters.store import Decision, Store
from include.mlops.domain.spec import Spec
from include.mlops.domain.validation import BatchReadError, CheckResult, Reason, read_batch, render_report, validate_frame
from include.mlops.steps.ingest_guard import ValidationCrashed, crash_reason, open_delivery, profile_fact, profile_verdict
from include.mlops.steps.ingest_summary import summarize as summarize  # re-exported: the DAG imports them from here
from include.mlops.steps.ingest_summary import task_label as task_label

log = logging.getLogger(__name__)

_DAY_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
#: Reasons that mean the table's structure is broken; store-level checks are skipped after them.
_STRUCTURAL = {"unreadable_file", "unsupported_format", "missing_columns", "wrong_type", "empty_batch"}


@dataclass
class BatchResult:
    """What happened to one delivery (small and JSON-able: it travels through XCom)."""

    file_name: str
    batch_id: int
    status: str  # accepted | quarantined | deferred (validation crashed: tried again on the next run)
    day: str | None
    rows: int
    reason_codes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    report_path: str | None = None
    pool_path: str | None = None
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        """One line per delivery for the Airflow UI."""
        if self.status == "accepted":
            return f"{self.file_name}: accepted ({self.rows} rows)"
        if self.status == "deferred":
            return f"{self.file_name}: deferred (validation crashed, tried again on the next run)"
        return f"{self.file_name}: quarantined ({', '.join(self.reason_codes)})"


def is_batch_candidate(name: str) -> bool:
    """Files the ingest looks at: everything but markers, hidden and temporary files."""
    return not (name.startswith((".", "_")) or name.endswith((".tmp", ".part")))


def _arrival(p: Path) -> tuple[int, str]:
    try:
        return (p.lstat().st_mtime_ns, p.name)
    except FileNotFoundError:
        return (0, p.name)


def discover(lake: Lake) -> list[Path]:
    """Every delivery in the landing folder, in order of arrival: regular files and anything else
    (links, pipes, folders), which the ingest quarantines unread."""
    if not lake.landing.is_dir():
        return []
    return sorted((p for p in lake.landing.iterdir() if is_batch_candidate(p.name)), key=_arrival)


def group_by_day(paths: list[Path]) -> list[list[str]]:
    """File names grouped by the day in their name, so that batches of one day are never
    validated concurrently (the one-accepted-batch-per-day rule needs that)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for p in paths:  # already in arrival order, which each group keeps
        m = _DAY_IN_NAME.search(p.name)
        groups[m.group(1) if m else "undated"].append(p.name)
    return [v for _, v in sorted(groups.items())]


def chunk_groups(groups: list[list[str]], max_chunks: int) -> list[list[str]]:
    """Spread day groups over at most ``max_chunks`` task chunks, days kept whole and in order.

    A mapped task costs seconds before its first batch (a task process, the DAG parse, Great
    Expectations' context), so a backlog of many days is ingested by a few tasks working through
    several days each, two at a time (measured on the full-year demo: a week in one task made the
    ingest the slower path of each simulated week, 1,776 s against 1,529 s for the year).
    """
    if not groups:
        return []
    n = max(1, min(max_chunks, len(groups)))
    size = -(-len(groups) // n)  # ceil
    return [[name for group in groups[i : i + size] for name in group] for i in range(0, len(groups), size)]


def day_of(file_name: str, df: Any | None, spec: Spec) -> date | None:
    """The batch's day: from its file name, else the most common day of its event times."""
    m = _DAY_IN_NAME.search(file_name)
    if m:
        try:
            return date.fromisoformat(m.group(1))
        except ValueError:
            pass
    if df is not None and spec.time_column in df.columns and len(df):
        try:
            days = df[spec.time_column].dt.date
            first: date = days.mode().iloc[0]
            return first
        except (AttributeError, IndexError):
            return None
    return None


def _store_checks(
    store: Store, spec: Spec, model: str, batch_id: int, sha: str, day: date | None, df: Any, arrived_at: datetime | None = None
) -> list[Reason]:
    dup = store.accepted_batch_with_sha(model, sha, exclude_id=batch_id)
    if dup:
        return [
            Reason(
                "duplicate_batch",
                f"same content as batch #{dup['id']} ({dup['file_name']}), already accepted on {dup['decided_at']:%Y-%m-%d %H:%M} UTC",
                details={"accepted_batch_id": dup["id"]},
            )
        ]
    reasons: list[Reason] = []
    if day is not None:
        same_day = store.accepted_batch_for_day(model, day, exclude_id=batch_id)
        if same_day:
            reasons.append(
                Reason(
                    "duplicate_day",
                    f"a batch for {day} was already accepted (#{same_day['id']}, {same_day['file_name']})",
                    details={"accepted_batch_id": same_day["id"]},
                )
            )
        # Stale: older than what had already been accepted when this batch *arrived* (batches of a
        # backlog validated in parallel never make each other stale).
        latest = store.latest_accepted_day(model, arrived_before=arrived_at)
        max_age = spec.batch.max_age_days
        if latest is not None and max_age is not None and (latest - day).days > max_age:
            reasons.append(
                Reason(
                    "stale_batch",
                    f"batch day {day} is {(latest - day).days} days older than the newest day accepted before it arrived, {latest} "
                    f"(limit {max_age})",
                    details={"latest_accepted_day": latest.isoformat()},
                )
            )
    if spec.entity_id in df.columns:
        known = store.known_entity_ids(model, df[spec.entity_id].astype(str).tolist(), exclude_batch=batch_id)
        if known:
            reasons.append(
                Reason(
                    "known_entity_ids",
                    f"{len(known)} {spec.entity_id} value(s) already have labels from another batch (e.g. {known[0]!r})",
                    column=spec.entity_id,
                    details={"count": len(known)},
                )
            )
    return reasons


def _write_report(
    lake: Lake,
    batch_id: int,
    file_name: str,
    reasons: list[Reason],
    checks: list[CheckResult],
    facts: dict[str, Any],
    gx: dict[str, Any] | None,
) -> Path:
    html_path = lake.ingest_reports / f"batch-{batch_id:06d}.html"
    atomic_write_text(html_path, render_report(f"Label batch {file_name}", reasons, checks, facts))
    atomic_write_text(
        html_path.with_suffix(".gx.json"),
        json.dumps(gx or {"note": "not validated by GX: the file is not a readable table"}, indent=1, default=str),
    )
    return html_path


def _move(src: Path, dest_dir: Path, batch_id: int) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{batch_id:06d}-{src.name}"
    if os.path.lexists(src):  # a link is moved as a link, never followed
        if os.path.lexists(dest) and not src.is_dir():  # a retry after the copy landed: the source is the same delivery
            src.unlink()
        else:
            shutil.move(str(src), dest)
    return dest


class IngestError(RuntimeError):
    """An ingest that cannot go on for a reason outside the batch (e.g. the data folder's disk)."""


#: A write into the lake failing with one of these is the disk's fault, not the batch's.
_DISK_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}


def ingest_file(
    path: Path, spec: Spec, store: Store, lake: Lake, *, model: str, dag_id: str | None = None, run_id: str | None = None
) -> BatchResult:
    """Validate one delivered file and accept or quarantine it (idempotent, see module doc).

    When the data folder cannot be written (read-only or full disk), the ingest stops before any
    verdict is committed with an :class:`IngestError` that says so: the delivery stays in landing
    and the next run (or the task's retry) takes it again."""
    try:
        return _ingest_file(path, spec, store, lake, model=model, dag_id=dag_id, run_id=run_id)
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        raise IngestError(
            f"the data folder {lake.root} cannot be written ({exc.strerror}: {exc.filename}); "
            f"batch {path.name} stays in landing and is ingested on the next run once the disk is writable"
        ) from exc


def _ingest_file(
    path: Path, spec: Spec, store: Store, lake: Lake, *, model: str, dag_id: str | None = None, run_id: str | None = None
) -> BatchResult:
    opened = open_delivery(path, spec)
    record = store.open_batch_for(model, path.name, opened.sha)
    if record and record["status"] in ("accepted", "quarantined"):
        return _finish_interrupted(record, path, store, lake, model)
    arrived_at = datetime.fromtimestamp(path.lstat().st_mtime, UTC).replace(tzinfo=None)
    batch_id = record["id"] if record else store.create_batch(model, path.name, opened.sha, dag_id, run_id, arrived_at)
    d = _Delivery(path, batch_id, opened.sha, model, dag_id, run_id)
    if opened.refusal is not None:
        d.reasons = [opened.refusal]
    else:
        _validate_attempt(d, spec, store, arrived_at, opened.data)
    store.set_batch_day(batch_id, d.day, d.rows)
    facts = {"batch id": batch_id, "file": d.name, "sha256": d.sha, "day": d.day, "rows": d.rows, "model": model, "dag run": run_id}
    facts["batch profile"] = profile_fact(d.profile)
    report = _write_report(lake, batch_id, d.name, d.reasons, d.checks, facts, d.gx_result)
    if d.reasons:
        return _quarantine(d, store, lake, report)
    return _accept(d, spec, store, lake, report)


def _validate_attempt(d: _Delivery, spec: Spec, store: Store, arrived_at: datetime, data: bytes | None) -> None:
    """One counted validation attempt: a crash leaves the file in landing (:class:`ValidationCrashed`)
    until the spec's last attempt, which quarantines it as ``validation_crashed``. The attempt is
    counted before validating, so a worker killed mid-validation counts too, and uncounted once
    validation finishes (a later failure, e.g. a full disk, is not the batch's)."""
    limit = spec.batch.max_validation_attempts
    attempts = store.start_attempt(d.batch_id)
    if attempts > limit:  # every allowed attempt died without a verdict
        d.reasons = [crash_reason(attempts - 1, limit, store.get_batch(d.batch_id).get("last_error"))]
        return
    try:
        _validate(d, spec, store, arrived_at, data)
    except Exception as exc:
        if isinstance(exc, SQLAlchemyError) or (isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS):
            raise  # the ops store or the disk failed, not the batch: not counted against it
        error = f"{type(exc).__name__}: {exc}"[:1000]
        log.exception("batch #%s %s: validation crashed (attempt %s of %s)", d.batch_id, d.name, attempts, limit)
        store.record_attempt_error(d.batch_id, error)
        if attempts < limit:
            raise ValidationCrashed(d.name, d.batch_id, attempts, limit, error) from exc
        d.df, d.checks, d.gx_result = None, [], None
        d.reasons = [crash_reason(attempts, limit, error)]
    else:
        store.finish_attempt(d.batch_id)


def _finish_interrupted(record: dict[str, Any], path: Path, store: Store, lake: Lake, model: str) -> BatchResult:
    """A previous attempt decided but did not finish moving the file: finish it, decide nothing anew."""
    target = lake.archive if record["status"] == "accepted" else lake.quarantine
    dest = _move(path, target, record["id"])
    store.mark_moved(record["id"], str(dest))
    log.info("batch #%s %s: finished an interrupted %s", record["id"], path.name, record["status"])
    q = {r["batch_id"]: r for r in store.list_quarantine(model)}.get(record["id"])
    return BatchResult(
        path.name,
        record["id"],
        record["status"],
        record["day"].isoformat() if record["day"] else None,
        record["rows"] or 0,
        list(record["reason_codes"] or []),
        [r["message"] for r in (q["reasons"] if q else [])],
        q["report_path"] if q else None,
        record["pool_path"],
        resumed=True,
    )


@dataclass
class _Delivery:
    """One delivered file on its way to a verdict, and what validating it found."""

    path: Path
    batch_id: int
    sha: str
    model: str
    dag_id: str | None
    run_id: str | None
    df: Any = None  # None: not a readable table
    day: date | None = None
    reasons: list[Reason] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    gx_result: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None  # the batch's statistics for the learned profile
    profile: dict[str, Any] = field(default_factory=dict)  # the profile's verdict details

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def rows(self) -> int:
        return 0 if self.df is None else len(self.df)

    @property
    def day_s(self) -> str | None:
        return self.day.isoformat() if self.day else None

    def decision(self, outcome: str, code: str, reasons: list[dict[str, Any]], inputs: dict[str, Any], report: Path) -> Decision:
        subject = f"batch #{self.batch_id} {self.name}"
        return Decision(self.model, "ingest", outcome, code, subject, reasons, inputs, str(report), self.dag_id, self.run_id)


def _validate(d: _Delivery, spec: Spec, store: Store, arrived_at: datetime, data: bytes | None = None) -> None:
    """Read the file, run the spec's suite, then (unless its structure is broken) the store's checks;
    a batch that passes them all is judged against the learned profile."""
    try:
        d.df = read_batch(d.path, spec, data)
    except BatchReadError as exc:
        d.reasons = [Reason(exc.code, exc.message)]
    d.day = day_of(d.name, d.df, spec)
    if d.df is not None:
        outcome = validate_frame(d.df, spec, d.day)
        d.reasons, d.checks, d.gx_result = outcome.reasons, outcome.checks, outcome.gx_result
        if not {r.code for r in d.reasons} & _STRUCTURAL:
            d.reasons += _store_checks(store, spec, d.model, d.batch_id, d.sha, d.day, d.df, arrived_at)
        if not d.reasons:
            d.reasons, d.summary, d.profile = profile_verdict(d.df, spec, store, d.model, d.batch_id)


def _quarantine(d: _Delivery, store: Store, lake: Lake, report: Path) -> BatchResult:
    """Record the quarantine with its reasons (and alert, once), then move the file aside."""
    codes = sorted({r.code for r in d.reasons})
    reasons = [r.to_dict() for r in d.reasons]
    dest = lake.quarantine / f"{d.batch_id:06d}-{d.name}"
    inputs = {"file": d.name, "sha256": d.sha, "day": d.day_s, "rows": d.rows, "profile": d.profile}
    decision = d.decision("quarantined", codes[0], reasons, inputs, report)
    is_new = store.quarantine_batch(d.batch_id, d.model, d.name, reasons, str(dest), str(report), decision)
    if is_new:
        raise_alert(
            store,
            d.model,
            severity="warning",
            kind="batch_quarantined",
            dedupe_key=f"batch_quarantined:{d.batch_id}",
            message=f"label batch {d.name} quarantined: " + "; ".join(r.message for r in d.reasons)[:900],
            payload={"batch_id": d.batch_id, "file": d.name, "reason_codes": codes, "report": str(report)},
        )
    _move(d.path, lake.quarantine, d.batch_id)
    store.mark_moved(d.batch_id, str(dest))
    log.warning("batch #%s %s quarantined: %s", d.batch_id, d.name, "; ".join(r.message for r in d.reasons))
    return BatchResult(d.name, d.batch_id, "quarantined", d.day_s, d.rows, codes, [r.message for r in d.reasons], str(report))


def _accept(d: _Delivery, spec: Spec, store: Store, lake: Lake, report: Path) -> BatchResult:
    """Write the rows into the pool, store their ground truth with the decision, archive the file."""
    df, day = d.df, d.day
    assert df is not None and day is not None
    pool_path = _write_pool(df, spec, lake, d.batch_id, day)
    truth = [
        {"entity_id": str(e), "event_time": t.to_pydatetime(), "label": int(round(float(lbl))), "outcome": float(o)}
        for e, t, lbl, o in zip(
            df[spec.entity_id],
            df[spec.time_column],
            spec.target.derive(df[spec.target.source_column]),
            df[spec.target.source_column],
            strict=True,
        )
    ]
    inputs = {"file": d.name, "sha256": d.sha, "day": d.day_s, "rows": d.rows, "checks": len(d.checks), "profile": d.profile}
    decision = d.decision("accepted", "batch_valid", [], inputs, report)
    store.accept_batch(d.batch_id, d.model, day, str(pool_path), truth, decision, profile=d.summary)
    dest = _move(d.path, lake.archive, d.batch_id)
    store.mark_moved(d.batch_id, str(dest))
    log.info("batch #%s %s accepted: %s rows for %s", d.batch_id, d.name, d.rows, day)
    return BatchResult(d.name, d.batch_id, "accepted", d.day_s, d.rows, [], [], str(report), str(pool_path))


def _write_pool(df: Any, spec: Spec, lake: Lake, batch_id: int, day: date) -> Path:
    """Write the accepted rows with the derived label into the day's pool partition."""
    out = df[spec.batch_columns].copy()
    derived = spec.target.derive(out[spec.target.source_column])  # a regressor's target: the outcome itself
    out[spec.target.name] = derived.astype("float64") if spec.task == "regression" else derived.astype("int8")
    buf = io.BytesIO()
    out.to_parquet(buf, index=False)
    path = lake.pool_partition(day.isoformat()) / f"batch-{batch_id:06d}.parquet"
    atomic_write_bytes(path, buf.getvalue())
    return path


def ingest_group(
    file_names: list[str], spec: Spec, store: Store, lake: Lake, *, model: str, dag_id: str | None = None, run_id: str | None = None
) -> list[BatchResult]:
    """Ingest the named files of one day group, in order; files already gone are skipped. A file
    whose validation crashed is ``deferred`` (left in landing, alerted) and the group goes on."""
    results = []
    for name in file_names:
        path = lake.landing / name
        if not os.path.lexists(path):
            log.info("%s is no longer in the landing folder (handled by an earlier run)", name)
            continue
        try:
            results.append(ingest_file(path, spec, store, lake, model=model, dag_id=dag_id, run_id=run_id))
        except ValidationCrashed as exc:
            raise_alert(
                store,
                model,
                severity="warning",
                kind="batch_validation_crashed",
                dedupe_key=f"batch_validation_crashed:{exc.batch_id}",
                message=str(exc)[:900],
                payload={"batch_id": exc.batch_id, "file": name, "attempts": exc.attempts},
            )
            results.append(BatchResult(name, exc.batch_id, "deferred", None, 0, ["validation_crashed"], [str(exc)]))
    return results


def notify_landing(lake: Lake) -> Path:
    """Touch the landing folder's marker so the ingest DAG's asset watcher fires."""
    marker = lake.landing / READY_MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return marker


# -- entry points of the ingest_outcomes DAG --------------------------------------------------
#: one mapped task per core (the DAG runs two at a time): each task costs a process and Great
#: Expectations' context before its first batch, so more chunks than cores only add those costs
MAX_INGEST_TASKS = 2


def find_batch_groups(max_chunks: int = MAX_INGEST_TASKS, model: str | None = None) -> list[list[str]]:
    """File names waiting in ``model``'s landing folder (``None``: the default model's), in at most
    ``max_chunks`` chunks of whole days (one mapped task per chunk)."""
    from include.mlops.runtime import load_runtime

    rt = load_runtime(model=model)
    groups = group_by_day(discover(rt.lake))
    chunks = chunk_groups(groups, max_chunks)
    log.info("%s file(s) waiting in %s: %s day(s) in %s chunk(s)", sum(map(len, groups)), rt.lake.landing, len(groups), len(chunks))
    return chunks


def ingest_files(
    file_names: list[str], *, dag_id: str | None = None, run_id: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Ingest one day group of ``model`` (``None``: the default model); returns one small dict per delivery."""
    from include.mlops.runtime import load_runtime

    rt = load_runtime(model=model)
    results = ingest_group(file_names, rt.spec, rt.store, rt.lake, model=rt.model_name, dag_id=dag_id, run_id=run_id)
    return [r.to_dict() for r in results]
