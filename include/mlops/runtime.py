"""Wiring for one deployment: settings, the spec, the ops store and the lake, loaded together.

DAG tasks and command-line tools call :func:`load_runtime` once per task; nothing here runs at
import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from include.mlops.adapters.lake import Lake
from include.mlops.adapters.store import Store
from include.mlops.catalog import ModelEntry, load_catalog
from include.mlops.domain.spec import Spec
from include.mlops.settings import Settings, get_settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    spec: Spec
    model_name: str
    store: Store
    lake: Lake
    #: the model's place in the deployment (which DAGs, route and landing folder are its own)
    entry: ModelEntry | None = None


def configure_logging(settings: Settings) -> None:
    """Set the project's own log level (library code only logs; this is the one knob)."""
    logging.getLogger("include.mlops").setLevel(settings.log_level)


def load_runtime(settings: Settings | None = None, model: str | None = None) -> Runtime:
    """Load ``model``'s spec (``None``: the default model; see :mod:`include.mlops.catalog`), open
    (and migrate) the ops store, and point at the lake."""
    s = settings or get_settings()
    configure_logging(s)
    entry = load_catalog(s).get(model)
    store = Store.open(s.ops_db_url)
    lake = Lake(s.lake, entry.name, landing_path=entry.landing(s.lake))
    lake.ensure()
    return Runtime(s, entry.spec, entry.name, store, lake, entry)
