#!/usr/bin/env bash
# airflow-init (docker-compose.yaml): what `make up` does before it starts Airflow, for the compose
# shape. Migrates the metadata database (`airflow db migrate`, as tooling/stack.py does), creates
# the admin user of the FAB auth manager from .env (an existing user is left as it is: change its
# password in the UI or with `airflow users reset-password`), creates or migrates the ops store as
# its owner and grants the serving replicas' role its few privileges there
# (deploy/postgres/ops_store_init.py), and creates the shared state folders the DAGs and the
# Evidently UI expect. Safe to run again.
set -euo pipefail
: "${AIRFLOW_ADMIN_USERNAME:?}" "${AIRFLOW_ADMIN_PASSWORD:?}" "${MLOPS_HOME:?}"

airflow db migrate
# One alias change at a time: every task that moves a champion/challenger alias runs in this pool.
airflow pools set mlops_alias 1 "mlops-loop: tasks that change model aliases, one at a time"
# The admin user of the FAB auth manager, as `airflow users create` makes it, but with the password
# read from the environment: never on a command line (visible in `ps` and `docker top`).
python - <<'PY'
import os
import sys

from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
from airflow.providers_manager import ProvidersManager

ProvidersManager().initialize_providers_configuration()
name, password = os.environ["AIRFLOW_ADMIN_USERNAME"], os.environ["AIRFLOW_ADMIN_PASSWORD"]
with get_application_builder() as appbuilder:
    sm = appbuilder.sm
    if sm.find_user(name):
        print(f"airflow-init: admin user {name} exists (its password is left as it is)")
    elif not sm.add_user(name, "Airflow", "Admin", f"{name}@example.invalid", sm.find_role("Admin"), password):
        sys.exit(f"airflow-init: could not create the admin user {name}")
PY
python "${OPS_STORE_INIT:-/opt/mlops-deploy/ops-store-init.py}"  # the compose mount (deploy/smoke_as_processes.py: the file)
mkdir -p "$MLOPS_HOME/lake/landing" "$MLOPS_HOME/evidently"
echo "airflow-init: metadata database migrated, pool mlops_alias set, admin user $AIRFLOW_ADMIN_USERNAME present, state folders ready"
