"""What the ingest checks around a delivered file before its verdict: the file itself before it is
read, crashed validation attempts, and the learned batch profile.

* ``open_delivery``: a delivery must be a regular file in the landing folder. A symbolic link is
  never followed (its target is never opened: nothing of it reaches a report or an alert), a FIFO,
  a socket, a device or a folder is never opened either; a file larger than ``batch.max_file_bytes``
  is not read. The file is opened without following links, checked again on the open descriptor
  and read once into memory (bounded), so what is hashed is what is validated.
* ``crash_reason``: a file whose validation crashed (or killed its worker) ``batch.max_validation_attempts``
  times is quarantined as ``validation_crashed`` with the last error, so it never blocks its chunk.
* ``profile_verdict``: a batch the spec accepts is compared with the profile learned from the
  accepted history (``domain.profiles``: id format, join rate with logged predictions, label rate,
  each feature's magnitude, each categorical's value set).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.mlops.adapters.store import Store
from include.mlops.domain.profiles import judge_batch, summarize_batch
from include.mlops.domain.spec import Spec
from include.mlops.domain.validation import Reason

log = logging.getLogger(__name__)

_KINDS = {
    stat.S_IFDIR: "folder",
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


@dataclass
class Opened:
    """A delivery as found: its identity, its bytes (None when refused unread) and why it was refused."""

    sha: str
    data: bytes | None
    refusal: Reason | None = None


def _identity(path: Path, st: os.stat_result, kind: str) -> str:
    """A stable id for a delivery that is never read (it cannot be hashed by content)."""
    key = f"{kind}:{path.name}:{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
    return hashlib.sha256(key.encode()).hexdigest()


def _refused(path: Path, st: os.stat_result, kind: str, code: str, message: str, **details: Any) -> Opened:
    return Opened(_identity(path, st, kind), None, Reason(code, message, details={"kind": kind, **details}))


def open_delivery(path: Path, spec: Spec) -> Opened:
    """Check and read one delivered file (see the module doc); never follows a link."""
    st = os.lstat(path)
    limit = spec.batch.max_file_bytes
    if stat.S_ISLNK(st.st_mode):
        msg = f"{path.name} is a symbolic link; links in the landing folder are never followed (its target was not read)"
        return _refused(path, st, "symlink", "symlink_refused", msg)
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
        return _refused(path, st, kind, "not_a_regular_file", f"{path.name} is a {kind}, not a regular file (not read)")
    if st.st_size > limit:
        msg = f"{path.name} is {st.st_size} bytes; at most {limit} are accepted (batch.max_file_bytes; not read)"
        return _refused(path, st, "file", "file_too_large", msg, bytes=st.st_size)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:  # replaced by a link between the check and the open (ELOOP)
        msg = f"{path.name} could not be opened as a regular file ({exc.strerror}; not read)"
        return _refused(path, st, "file", "not_a_regular_file", msg)
    with os.fdopen(fd, "rb") as fh:
        now = os.fstat(fh.fileno())
        if not stat.S_ISREG(now.st_mode):
            return _refused(path, now, "special file", "not_a_regular_file", f"{path.name} is not a regular file (not read)")
        data = fh.read(limit + 1)
    if len(data) > limit:
        msg = f"{path.name} is more than {limit} bytes (batch.max_file_bytes; not read further)"
        return _refused(path, now, "file", "file_too_large", msg, bytes=len(data))
    return Opened(hashlib.sha256(data).hexdigest(), data)


class ValidationCrashed(RuntimeError):
    """Validating a delivery raised; it stays in landing and is tried again on the next run."""

    def __init__(self, file_name: str, batch_id: int, attempts: int, limit: int, error: str) -> None:
        super().__init__(f"validating {file_name} (batch #{batch_id}) crashed on attempt {attempts} of {limit}: {error}")
        self.file_name, self.batch_id, self.attempts, self.error = file_name, batch_id, attempts, error


def crash_reason(attempts: int, limit: int, error: str | None) -> Reason:
    """The verdict on a delivery whose validation never finished in ``limit`` attempts."""
    if error:
        msg = f"validation crashed on each of {limit} attempt(s); last error: {error}"
    else:
        msg = f"validation did not finish in {limit} attempt(s) (the worker died or was killed while validating it: memory?)"
    return Reason("validation_crashed", msg[:1000], details={"attempts": attempts, "error": error})


def load_history(store: Store, spec: Spec, model: str, batch_id: int, pool_root: Path | None = None) -> list[dict[str, Any]]:
    """Summaries of the most recent accepted batches (most recent day first). A batch accepted
    before summaries were stored is summarized once from its pool file (its join rate unknown)."""
    import pandas as pd

    history = []
    for row in store.accepted_batch_profiles(model, spec.batch.profile.history_batches, exclude_id=batch_id):
        summary = row["profile"]
        if summary is None and row["pool_path"] and Path(row["pool_path"]).is_file():
            try:
                summary = summarize_batch(pd.read_parquet(row["pool_path"]), spec, None)
            except Exception as exc:  # a pool file of another spec: left out of the profile
                log.warning("batch #%s: pool file %s not summarized for the profile: %s", row["id"], row["pool_path"], exc)
                continue
            store.set_batch_profile(row["id"], summary)
        if summary is not None:
            history.append(summary)
    return history


def profile_verdict(df: Any, spec: Spec, store: Store, model: str, batch_id: int) -> tuple[list[Reason], dict[str, Any], dict[str, Any]]:
    """The reasons the learned profile gives against a batch, the batch's own summary (stored with
    it when accepted) and the verdict's details (``status``: judged / profile not yet learned / disabled)."""
    ids = df[spec.entity_id].astype(str).tolist()
    join_rate = store.count_logged_entities(model, ids) / len(ids) if ids else None
    summary = summarize_batch(df, spec, join_rate)
    if not spec.batch.profile.enabled:
        return [], summary, {"status": "disabled"}
    findings, details = judge_batch(summary, load_history(store, spec, model, batch_id), spec)
    details["join_rate"] = join_rate
    reasons = [Reason(code, message, column=column, details=extra) for code, message, column, extra in findings]
    return reasons, summary, details


def profile_fact(details: dict[str, Any]) -> str:
    """The profile's verdict in one line, for the report."""
    status = details.get("status")
    if status == "profile not yet learned":
        return f"profile not yet learned ({details['batches']} of {details['needed']} accepted batches)"
    if status == "judged":
        found = details.get("findings") or []
        return f"judged against {details['batches']} accepted batches: " + (", ".join(found) if found else "normal")
    return str(status or "not judged (the spec's checks failed)")
