"""The ops store: the loop's own state, in SQLAlchemy, on SQLite by default or any SQL database.

It keeps what no other tool keeps: label batches and their validation verdicts, quarantine
records, the inference log, ground truth, the append-only deployment ledger, decisions (every gate
and policy outcome with its inputs and a reason code), alerts, and governance state.

This package is the only code that speaks SQL to those tables; everyone else calls the typed
methods of :class:`Store`, one mixin per concern:

* :mod:`.schema`: the tables, the schema version and its migrations, the engine, ``utcnow``;
* :mod:`.batch_queries`: label batches, quarantine, ground truth;
* :mod:`.inference_queries`: the inference log, its join to ground truth, the serving journal's checkpoints;
* :mod:`.ledger_queries`: the deployment ledger (who holds an alias);
* :mod:`.decision_queries`: decisions (:class:`Decision`);
* :mod:`.alert_queries`: alerts and their delivery state;
* :mod:`.state_queries`: governance state (small JSON values per model);
* :mod:`.registry_queries`: model-file digests checked at every load, and the per-model alias lock;
* :mod:`.quality_queries`: judged windows' realized quality, revised as late labels arrive.
"""

from __future__ import annotations

from include.mlops.adapters.store.alert_queries import AlertQueries
from include.mlops.adapters.store.base import StoreBase, jsonable
from include.mlops.adapters.store.batch_queries import BatchQueries
from include.mlops.adapters.store.decision_queries import Decision, DecisionQueries, insert_decision
from include.mlops.adapters.store.inference_queries import InferenceQueries, Record, write_journal_checkpoints
from include.mlops.adapters.store.ledger_queries import DEPLOY_STRATEGIES, LedgerQueries
from include.mlops.adapters.store.quality_queries import WindowKey, WindowQualityQueries, window_key
from include.mlops.adapters.store.registry_queries import RegistryQueries
from include.mlops.adapters.store.schema import (
    LATEST_VERSION,
    MIGRATIONS,
    alerts,
    alias_locks,
    batches,
    current_version,
    decisions,
    deployment_ledger,
    get_engine,
    governance_state,
    ground_truth,
    inference_log,
    log_journal,
    metadata,
    migrate,
    model_digests,
    quarantine,
    schema_version,
    utcnow,
    window_quality,
)
from include.mlops.adapters.store.state_queries import StateQueries

__all__ = [
    "DEPLOY_STRATEGIES",
    "LATEST_VERSION",
    "MIGRATIONS",
    "Decision",
    "Record",
    "Store",
    "WindowKey",
    "alerts",
    "alias_locks",
    "batches",
    "current_version",
    "decisions",
    "deployment_ledger",
    "get_engine",
    "governance_state",
    "ground_truth",
    "inference_log",
    "insert_decision",
    "jsonable",
    "log_journal",
    "metadata",
    "migrate",
    "model_digests",
    "quarantine",
    "schema_version",
    "utcnow",
    "window_key",
    "window_quality",
    "write_journal_checkpoints",
]


class Store(
    BatchQueries,
    InferenceQueries,
    LedgerQueries,
    DecisionQueries,
    AlertQueries,
    StateQueries,
    RegistryQueries,
    WindowQualityQueries,
    StoreBase,
):
    """Typed access to the ops store for one database URL."""

    @classmethod
    def open(cls, url: str) -> Store:
        """Open (creating or migrating the schema if needed) the ops store at ``url``."""
        engine = get_engine(url)
        migrate(engine)
        return cls(engine)
