"""Where the status pages live: one definition of every URL the plugin serves and the pages link to.

``/mlops-loop/`` (the Airflow navigation entry, and every link made before there were several
models) shows the overview of every model followed by the default model's page, so an old link
still lands on what it showed; ``/mlops-loop/models/<name>`` is one model's page.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from include.mlops.adapters.model_dags import MODEL_TAG_PREFIX

#: where the plugin's app is mounted in Airflow's API server
PREFIX = "/mlops-loop"


def home() -> str:
    return f"{PREFIX}/"


def model_page(name: str) -> str:
    return f"{PREFIX}/models/{quote(name, safe='')}"


def model_json(name: str) -> str:
    return f"{PREFIX}/api/models/{quote(name, safe='')}/status"


def overview_json() -> str:
    return f"{PREFIX}/api/models"


def report_file(path: str) -> str:
    return f"{PREFIX}/files?{urlencode({'path': path})}"


def model_tag(name: str) -> str:
    """The tag every DAG of the model carries (``model:<name>``, :mod:`include.mlops.adapters.model_dags`)."""
    return f"{MODEL_TAG_PREFIX}{name}"


def model_dags(airflow_url: str, name: str) -> str:
    """The Airflow UI's DAG list filtered by the model's tag."""
    return f"{airflow_url}/dags?{urlencode({'tags': model_tag(name)})}"
