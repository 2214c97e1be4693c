"""The loop's own UI: the status page served by the Airflow plugin."""
