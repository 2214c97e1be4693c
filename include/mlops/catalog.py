"""The models of one deployment: every spec file in the specs folder, plus the default model.

The **default model** is the spec ``MLOPS_SPEC`` names. It keeps the names a single-model
deployment always had: unprefixed DAG ids and assets, ``POST /predict``, ``<lake>/landing``. Every
other model in ``MLOPS_SPECS`` (a folder of ``*.yaml``/``*.yml`` files) gets its own copies, named
after its spec's ``name``: DAGs ``<model>.<step>``, assets ``<model>.<asset>``,
``POST /models/<model>/predict``, ``<lake>/landings/<model>``. A spec in the folder with the
default model's name is the default model (MLOPS_SPEC wins: a test or a trial can point it at a
modified copy). Adding a spec file is all it takes for a model to appear.

A spec that does not load is left out and reported (:attr:`Catalog.errors`), so one broken file
never takes the other models' DAGs down with it; a broken default spec raises, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from include.mlops.domain.spec import Spec, SpecError, load_spec
from include.mlops.settings import Settings, get_settings

log = logging.getLogger(__name__)

SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the deployment."""

    #: registered model name in MLflow and the key of every per-model row in the ops store
    name: str
    spec_path: Path
    spec: Spec
    default: bool

    @property
    def prefix(self) -> str:
        """What this model's DAG ids and asset names start with ("" for the default model)."""
        return "" if self.default else f"{self.name}."

    def dag_id(self, step: str) -> str:
        return f"{self.prefix}{step}"

    def landing(self, lake_root: Path) -> Path:
        return lake_root / "landing" if self.default else lake_root / "landings" / self.name

    @property
    def route(self) -> str:
        """The serving API's prediction route of this model (the default model has both)."""
        return f"/models/{self.name}/predict"


@dataclass(frozen=True)
class Catalog:
    models: tuple[ModelEntry, ...]
    #: spec file -> why it was left out
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def default(self) -> ModelEntry:
        return next(m for m in self.models if m.default)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str | None = None) -> ModelEntry:
        """The model called ``name`` (``None``: the default model); a clear error names the choices."""
        if name is None:
            return self.default
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in this deployment; models: {', '.join(self.names)}")


def spec_files(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file() and not p.name.startswith("."))


def load_catalog(settings: Settings | None = None) -> Catalog:
    """Every model of the deployment, the default one first, the others sorted by name."""
    s = settings or get_settings()
    spec = load_spec(s.spec_path)  # the default model's spec must load: raise as before
    default = ModelEntry(s.model_name_override or spec.name, s.spec_path, spec, default=True)
    others: dict[str, ModelEntry] = {}
    errors: dict[str, str] = {}
    for path in spec_files(s.specs_dir):
        if path.resolve() == s.spec_path.resolve():
            continue
        try:
            other = load_spec(path)
        except SpecError as exc:
            errors[str(path)] = str(exc)
            log.warning("model spec %s left out: %s", path, exc)
            continue
        if other.name in (spec.name, default.name):
            continue  # the default model's spec in the folder: MLOPS_SPEC names the one to use
        if other.name in others:
            errors[str(path)] = f"model name {other.name!r} is already taken by {others[other.name].spec_path}"
            log.warning("model spec %s left out: %s", path, errors[str(path)])
            continue
        others[other.name] = ModelEntry(other.name, path.resolve(), other, default=False)
    return Catalog((default, *sorted(others.values(), key=lambda m: m.name)), errors)
