"""Wiring for one deployment: settings, the spec, the ops store and the lake, loaded together.

DAG tasks and command-line tools call :func:`load_runtime` once per task; nothing here runs at
import time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from include.mlops.adapters.lake import Lake
from include.mlops.adapters.store import Store
from include.mlops.domain.spec import Spec, load_spec
from include.mlops.settings import Settings, get_settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    spec: Spec
    model_name: str
    store: Store
    lake: Lake


def configure_logging(settings: Settings) -> None:
    """Set the project's own log level (library code only logs; this is the one knob)."""
    logging.getLogger("include.mlops").setLevel(settings.log_level)


def load_runtime(settings: Settings | None = None) -> Runtime:
    """Load the spec, open (and migrate) the ops store, and point at the lake."""
    s = settings or get_settings()
    configure_logging(s)
    spec = load_spec(s.spec_path)
    model = s.model_name_override or spec.name
    store = Store.open(s.ops_db_url)
    lake = Lake(s.lake, model)
    lake.ensure()
    return Runtime(s, spec, model, store, lake)
