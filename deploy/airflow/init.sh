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
airflow users create \
  --username "$AIRFLOW_ADMIN_USERNAME" \
  --password "$AIRFLOW_ADMIN_PASSWORD" \
  --role Admin \
  --firstname Airflow \
  --lastname Admin \
  --email "$AIRFLOW_ADMIN_USERNAME@example.invalid"
python "${OPS_STORE_INIT:-/opt/mlops-deploy/ops-store-init.py}"  # the compose mount (deploy/smoke_as_processes.py: the file)
mkdir -p "$MLOPS_HOME/lake/landing" "$MLOPS_HOME/evidently"
echo "airflow-init: metadata database migrated, pool mlops_alias set, admin user $AIRFLOW_ADMIN_USERNAME present, state folders ready"
