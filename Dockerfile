# Image for the scaled-out shape (docker-compose.yaml) and Astro-style deployments: Airflow 3.3.2 on
# Python 3.11 with the project's locked runtime dependencies. The project (dags/, plugins/,
# include/) is mounted or copied at /opt/airflow; PYTHONPATH makes `include` importable.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
ENV PYTHONPATH=/opt/airflow
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root include /opt/airflow/include
