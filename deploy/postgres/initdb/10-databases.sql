-- The loop's three databases on the compose PostgreSQL, the same ones `make up` creates on its own
-- cluster with MLOPS_BACKEND=postgres (tooling/postgres.py, DATABASES): Airflow's metadata,
-- MLflow's backend store, the ops store. The postgres image runs this once, when it initialises an
-- empty data volume, as the superuser role POSTGRES_USER (mlops, as in the local cluster).
CREATE DATABASE airflow;
CREATE DATABASE mlflow;
CREATE DATABASE ops;
