"""Adapters to the outside: the ops store, the MLflow registry, the lake, alerts and notifiers,
the Airflow API and the asset definitions."""
