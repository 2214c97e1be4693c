"""One copy of every DAG per model of the deployment (Airflow dynamic DAG generation).

Each file in ``dags/`` builds its DAG through a function of a :class:`~include.mlops.catalog.ModelEntry`
and calls it for every model :func:`deployment_models` returns: the catalog, read at parse time (a
YAML read per spec file). The default model's DAGs keep their plain ids (``monitor_model``); every
other model's are ``<model>.<step>``. Every copy carries the model in its tags (``model:<name>``),
its display name and its documentation, so the Airflow UI's list can be filtered and read by model.

Imported by DAG files at parse time: stdlib and the catalog only.
"""

from __future__ import annotations

from pathlib import Path

from include.mlops.catalog import ModelEntry, load_catalog
from include.mlops.settings import PROJECT_ROOT

#: every DAG of the loop carries this tag
LOOP_TAG = "mlops-loop"
#: the tag that names a DAG's model (``model:<name>``): filters the UI list by model
MODEL_TAG_PREFIX = "model:"


def deployment_models() -> tuple[ModelEntry, ...]:
    """The deployment's models, the default one first (a spec that does not load is left out and
    logged; a broken default spec raises, so every DAG file shows the error)."""
    return load_catalog().models


def dag_tags(entry: ModelEntry, *step_tags: str) -> list[str]:
    return [LOOP_TAG, *step_tags, f"{MODEL_TAG_PREFIX}{entry.name}"]


def display_name(entry: ModelEntry, step: str) -> str:
    """What the UI lists: the step first, so one step's DAGs of every model sit together when the
    list is sorted by name; then the model, for the default one too (its id does not say it)."""
    return f"{step} · {entry.name}"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def model_doc(entry: ModelEntry, step: str, doc: str | None) -> str:
    """The DAG file's documentation (a ``### <step>`` heading, then the text) for ``entry``'s copy:
    the heading names the copy's DAG id, the first line which model it runs."""
    lines = (doc or "").strip().splitlines()
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
    role = "the deployment's default model" if entry.default else "one of the deployment's models"
    head = f"### {entry.dag_id(step)}\n\n**Model `{entry.name}`** ({role}; spec `{_shown(entry.spec_path)}`)."
    return "\n".join([head, *lines]) + "\n"
