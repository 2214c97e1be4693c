#!/usr/bin/env bash
# airflow-init (docker-compose.yaml): what `make up` does before it starts Airflow, for the compose
# shape. Migrates the metadata database (`airflow db migrate`, as tooling/stack.py does), creates
# the admin user of the FAB auth manager from .env (an existing user is left as it is: change its
# password in the UI or with `airflow users reset-password`), and creates the shared state folders
# the DAGs and the Evidently UI expect. Safe to run again.
set -euo pipefail
: "${AIRFLOW_ADMIN_USERNAME:?}" "${AIRFLOW_ADMIN_PASSWORD:?}" "${MLOPS_HOME:?}"

airflow db migrate
airflow users create \
  --username "$AIRFLOW_ADMIN_USERNAME" \
  --password "$AIRFLOW_ADMIN_PASSWORD" \
  --role Admin \
  --firstname Airflow \
  --lastname Admin \
  --email "$AIRFLOW_ADMIN_USERNAME@example.invalid"
mkdir -p "$MLOPS_HOME/lake/landing" "$MLOPS_HOME/evidently"
echo "airflow-init: metadata database migrated, admin user $AIRFLOW_ADMIN_USERNAME present, state folders ready"
