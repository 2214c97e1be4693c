"""Imported once by the LocalExecutor's forkserver (``stack.TASK_PRELOAD``) before any task runs:
the libraries the loop's tasks use, so every task process forked from a worker inherits them.

Kept to third-party imports and logger settings: the project's own modules are imported fresh by
each task, so an edit reaches the next task without restarting the scheduler. The loggers and
warnings are quieted here because the forkserver writes to the scheduler's log: Great
Expectations announces some 200 registrations at import, and skops (how MLflow stores the
sklearn models) probes every loaded module at import, which Airflow's deprecated-module shims
answer with a warning each.

A library that fails to import is reported and skipped, never raised: an exception here would
stop the forkserver, and with it every task; the task that needs the library then imports it
itself and fails with the real error.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import warnings

LIBRARIES = (
    "pandas",
    "pyarrow.parquet",
    "sklearn.ensemble",
    "great_expectations",
    "mlflow",
    "mlflow.sklearn",
    "skops.io",
    "evidently",
    # the deploy gate's evaluation: MLflow's built-in evaluators and the plots they draw
    "mlflow.models.evaluation.evaluators.classifier",
    "matplotlib.pyplot",
)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no telemetry: nothing leaves the machine
logging.getLogger("great_expectations").setLevel(logging.WARNING)

failed: dict[str, str] = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # Airflow's DeprecatedImportWarning is one
    warnings.simplefilter("ignore", DeprecationWarning)
    for _name in LIBRARIES:
        try:
            importlib.import_module(_name)
        except Exception as exc:  # see the module doc: never raise here
            failed[_name] = f"{type(exc).__name__}: {exc}"
            print(f"mlops task preload: could not import {_name} ({failed[_name]}); tasks will import it themselves", file=sys.stderr)
    # MLflow maps every installed module to its package the first time a model is logged or
    # loaded (1-2 CPU s a task); done once here. A package installed after the scheduler started
    # is only missing from MLflow's version-mismatch warnings until the next start.
    try:
        from mlflow.utils.requirements_utils import _init_modules_to_packages_map

        _init_modules_to_packages_map()
    except Exception as exc:  # a private helper of MLflow's: gone in a later version, nothing breaks
        failed["mlflow packages map"] = f"{type(exc).__name__}: {exc}"

# Everything imported here lives as long as the process: move it out of the garbage collector's
# sight. Otherwise every task process forked from here walks these objects (some 700,000) in its
# first full collection: 0.5 CPU s a task, measured on the year demo, and pages copied by touching.
gc.freeze()
