"""airflow-init (docker-compose.yaml): create or migrate the ops store as its owner, then grant the
serving replicas' role exactly what the serving API does there.

    PYTHONPATH=<project> python deploy/postgres/ops_store_init.py     (MLOPS_OPS_DB_URL: the owner's URL)

The serving API writes the inference log itself (and its journal's checkpoints), and reads the
schema version (at every connect) and the sha256 recorded for each model version (before loading
it). Its role, ``ops_serving`` (created by deploy/postgres/initdb/10-databases.sql), gets those
privileges on those tables and nothing else: it cannot read labels, decisions or alerts, change the
ledger or the schema. Run after every upgrade (airflow-init does): new tables get no grant unless
listed here. PostgreSQL only; safe to run again.
"""

from __future__ import annotations

import os
import sys

#: The serving role and what it may do, table by table (tests/integration/test_compose_roles.py
#: runs the serving API's store calls as this role on a real PostgreSQL).
SERVING_ROLE = "ops_serving"
SERVING_GRANTS: dict[str, tuple[str, ...]] = {
    "schema_version": ("SELECT",),  # Store.open: is the schema current?
    "inference_log": ("INSERT",),  # the log writer and the journal's replay
    "log_journal": ("SELECT", "INSERT", "UPDATE", "DELETE"),  # the journal's checkpoints
    "model_digests": ("SELECT",),  # the sha256 checked at every model load
}
#: Columns the role may read back, for ``INSERT ... RETURNING`` of the generated key.
SERVING_COLUMN_GRANTS: dict[str, tuple[str, ...]] = {"inference_log": ("id",)}


def grant_statements(role: str = SERVING_ROLE) -> list[str]:
    """The GRANT statements, after a REVOKE of everything the role may have had on the schema's tables."""
    out = [f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"', f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM "{role}"']
    out += [f'GRANT {", ".join(privileges)} ON TABLE "{table}" TO "{role}"' for table, privileges in SERVING_GRANTS.items()]
    out += [f'GRANT SELECT ({", ".join(columns)}) ON TABLE "{table}" TO "{role}"' for table, columns in SERVING_COLUMN_GRANTS.items()]
    return out


def main() -> int:
    from sqlalchemy import text

    from include.mlops.adapters.store import Store

    url = os.environ["MLOPS_OPS_DB_URL"]
    store = Store.open(url)  # creates or migrates the schema, as the owner
    if store.engine.dialect.name != "postgresql":
        print("ops store is not on PostgreSQL: no serving role to grant")
        return 0
    with store.engine.begin() as conn:
        for statement in grant_statements():
            conn.execute(text(statement))
        for table, columns in SERVING_COLUMN_GRANTS.items():  # the generated keys of the tables it inserts into
            seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table, "c": columns[0]}).scalar()
            if seq:
                conn.execute(text(f'GRANT USAGE ON SEQUENCE {seq} TO "{SERVING_ROLE}"'))
    print(f"ops store ready; role {SERVING_ROLE} may: " + "; ".join(f"{t} {'/'.join(p)}" for t, p in SERVING_GRANTS.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
