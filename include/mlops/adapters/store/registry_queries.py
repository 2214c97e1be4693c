"""What the loop keeps about the registry that MLflow must not be trusted with.

* ``model_digests``: the sha256 of each version's model file, written once by the loop when it
  registers the version (and never by anyone with only MLflow access); every model load checks the
  downloaded file against it (:mod:`include.mlops.adapters.model_artifacts`).
* ``alias_locks``: one alias change per model at a time, across processes and hosts. Acquiring is an
  insert (nobody holds it) or a conditional update (the holder's lease ran out, or it is ours), each
  in its own transaction: atomic on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from include.mlops.adapters.store.base import StoreBase
from include.mlops.adapters.store.schema import alias_locks, model_digests, utcnow


class RegistryQueries(StoreBase):
    # -- model digests ------------------------------------------------------------------------------
    def record_model_digest(
        self, model: str, version: str, sha256: str, model_file: str, trusted_types: list[str], recorded_by: str | None = None
    ) -> dict[str, Any]:
        """Record the digest of ``version``'s model file; a version's first record is final (a second
        call with the same digest returns it, a different digest raises ``ValueError``)."""
        existing = self.model_digest(model, version)
        if existing is not None:
            if existing["sha256"] != sha256:
                raise ValueError(
                    f"{model} v{version} already has digest {existing['sha256']} recorded; refusing to replace it with {sha256}"
                )
            return existing
        try:
            with self.begin() as conn:
                conn.execute(
                    insert(model_digests).values(
                        model_name=model,
                        version=str(version),
                        sha256=sha256,
                        model_file=model_file,
                        trusted_types=list(trusted_types),
                        recorded_by=recorded_by,
                        recorded_at=utcnow(),
                    )
                )
        except IntegrityError:  # recorded concurrently: the check below decides
            pass
        row = self.model_digest(model, version)
        assert row is not None
        if row["sha256"] != sha256:
            raise ValueError(f"{model} v{version} already has digest {row['sha256']} recorded; refusing to replace it with {sha256}")
        return row

    def model_digest(self, model: str, version: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(model_digests).where(model_digests.c.model_name == model, model_digests.c.version == str(version)))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    # -- alias locks --------------------------------------------------------------------------------
    def try_alias_lock(self, model: str, owner: str, lease_seconds: float) -> bool:
        """Take (or renew, when ``owner`` holds it) the alias lock of ``model`` for ``lease_seconds``;
        False when someone else holds an unexpired lease."""
        now = utcnow()
        until = now + timedelta(seconds=lease_seconds)
        try:
            with self.begin() as conn:
                conn.execute(insert(alias_locks).values(model_name=model, owner=owner, acquired_at=now, expires_at=until))
            return True
        except IntegrityError:
            pass
        with self.begin() as conn:
            taken = conn.execute(
                update(alias_locks)
                .where(alias_locks.c.model_name == model)
                .where((alias_locks.c.owner == owner) | (alias_locks.c.expires_at < now))
                .values(owner=owner, acquired_at=now, expires_at=until)
            )
            return bool(taken.rowcount == 1)

    def release_alias_lock(self, model: str, owner: str) -> bool:
        """Release the lock if ``owner`` still holds it; False when it had expired and been taken."""
        with self.begin() as conn:
            gone = conn.execute(delete(alias_locks).where(alias_locks.c.model_name == model, alias_locks.c.owner == owner))
            return bool(gone.rowcount == 1)

    def alias_lock_holder(self, model: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(alias_locks).where(alias_locks.c.model_name == model)).mappings().first()
        return dict(row) if row else None
