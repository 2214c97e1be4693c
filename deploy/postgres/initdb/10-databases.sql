-- The loop's databases and roles on the compose PostgreSQL: the same three databases `make up`
-- creates on its own cluster with MLOPS_BACKEND=postgres (tooling/postgres.py, DATABASES), each
-- owned by its own login role, so no service holds the superuser (POSTGRES_USER, mlops: this script
-- only). The postgres image runs this file with psql once, when it initialises an empty data volume;
-- it is idempotent, so `docker compose exec -T postgres psql -U mlops -d postgres
-- -f /docker-entrypoint-initdb.d/10-databases.sql` adds what an older volume lacks (docs/deploy.md).
--
--   airflow      owns `airflow` (Airflow's metadata and Celery's results)
--   mlflow       owns `mlflow` (MLflow's backend store)
--   ops          owns `ops` (the ops store: DAG tasks create and migrate it)
--   ops_serving  may connect to `ops` only; what it may do there (write the inference log, read the
--                schema version and the model digests) is granted by deploy/postgres/ops_store_init.py
--                once the tables exist
--
-- The passwords come from the container's environment (psql's \getenv), never from this file.
\set ON_ERROR_STOP on
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv ops_password OPS_DB_PASSWORD
\getenv serving_password SERVING_DB_PASSWORD

SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', r.name, r.password)
FROM (VALUES ('airflow', :'airflow_password'), ('mlflow', :'mlflow_password'), ('ops', :'ops_password'),
             ('ops_serving', :'serving_password')) AS r(name, password)
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.name)
\gexec

SELECT format('CREATE DATABASE %I OWNER %I', d.name, d.name)
FROM (VALUES ('airflow'), ('mlflow'), ('ops')) AS d(name)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d.name)
\gexec

-- Only a database's own roles may connect to it.
REVOKE ALL ON DATABASE airflow, mlflow, ops FROM PUBLIC;
GRANT CONNECT ON DATABASE ops TO ops_serving;
