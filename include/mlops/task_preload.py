"""Imported once by the LocalExecutor's forkserver (``stack.TASK_PRELOAD``) before any task runs:
the libraries the loop's tasks use, so every task process forked from a worker inherits them.

Kept to third-party imports and logger settings: the project's own modules are imported fresh by
each task, so an edit reaches the next task without restarting the scheduler. The loggers and
warnings are quieted here because the forkserver writes to the scheduler's log: Great
Expectations announces some 200 registrations at import, and skops (how MLflow stores the
sklearn models) probes every loaded module at import, which Airflow's deprecated-module shims
answer with a warning each.
"""

from __future__ import annotations

import logging
import os
import warnings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no telemetry: nothing leaves the machine
logging.getLogger("great_expectations").setLevel(logging.WARNING)

import pandas  # noqa: E402, F401
import pyarrow.parquet  # noqa: E402, F401
import sklearn.ensemble  # noqa: E402, F401

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # Airflow's DeprecatedImportWarning is one
    warnings.simplefilter("ignore", DeprecationWarning)
    import evidently  # noqa: F401
    import great_expectations  # noqa: F401
    import mlflow
    import mlflow.sklearn  # noqa: F401
    import skops.io  # noqa: F401
