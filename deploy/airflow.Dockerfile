# The image of every Python service in docker-compose.yaml (the Airflow components, the Celery
# worker, MLflow, the serving API, the Evidently UI): Apache Airflow's own "slim" image at exactly
# the version the lock pins (apache-airflow==3.3.2, Python 3.11, like the development venv), plus
# the project's locked runtime dependencies (requirements.txt: the providers for Celery and the FAB
# auth manager, boto3 for MLflow's S3 artifacts, psycopg2/asyncpg for PostgreSQL, ...).
# The slim image carries Airflow and almost no providers, so the lock decides every version.
#
# The Astro path uses ../Dockerfile (Astro Runtime) instead; see docs/deploy.md for why there are two.
# Build: docker compose build   (context: the project root; .dockerignore keeps state and secrets out)
FROM apache/airflow:slim-3.3.2-python3.11

# Folders that named volumes are mounted on: created here, owned by the image's airflow user, so
# Docker copies that ownership into each new, empty volume (the shared state folder, the serving
# replicas' journal, MLflow's user store).
USER root
RUN mkdir -p /state/serving-journal /opt/mlflow-auth \
    && chown airflow:0 /state /state/serving-journal /opt/mlflow-auth \
    && chmod 0770 /state /state/serving-journal /opt/mlflow-auth
USER airflow

COPY --chown=airflow:0 requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip check \
    && python -c "import airflow, sys; v = airflow.__version__; sys.exit(0 if v == '3.3.2' else f'Airflow {v} in the image, the lock pins 3.3.2')"

# The project, importable as `include` (compose also mounts dags/, plugins/ and include/ over these
# copies, so an edit shows up without a rebuild).
ENV PYTHONPATH=/opt/airflow
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
COPY --chown=airflow:0 include /opt/airflow/include
# Development tooling (the demo's replay and fire drills): the drills name a training pipeline in it.
COPY --chown=airflow:0 tooling /opt/airflow/tooling
