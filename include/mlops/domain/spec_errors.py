"""Spec checks that span sections, and where in a spec file a validation error is (pydantic's
location rendered for people)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from include.mlops.domain.spec import Spec


def error_location(loc: tuple[Any, ...], raw: Any) -> str:
    """Render a pydantic error location, naming list items by their ``name`` when they have one."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int):
            label = str(key)
            if isinstance(node, list) and 0 <= key < len(node):
                item = node[key]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    label = item["name"]
                node = item
            else:
                node = None
            parts[-1:] = [f"{parts[-1]}[{label}]"] if parts else [f"[{label}]"]
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def metrics_fit_task(self: Spec) -> None:
    """Every metric the spec names is one of its task's (``domain.tasks``)."""
    from include.mlops.domain.tasks import METRICS

    named = {
        "deployment.primary_metric": [self.deployment.primary_metric],
        "deployment.floors": list(self.deployment.floors),
        "promotion.metric": [self.promotion.metric],
    }
    for where, names in named.items():
        wrong = [n for n in names if n not in METRICS[self.task]]
        if wrong:
            raise ValueError(f"{where}: {', '.join(wrong)} is not a {self.task} metric (use one of {', '.join(METRICS[self.task])})")


def drift_methods_fit(self: Spec) -> None:
    """Each drift override's method applies to its feature's kind (``drift.METHODS``)."""
    from include.mlops.domain.drift import METHODS

    for name, override in self.monitoring.drift_overrides.items():
        kind = "categorical" if self.feature(name).type == "categorical" else "numeric"
        if override.method is not None and kind not in METHODS[override.method].kinds:
            allowed = ", ".join(m for m, test in METHODS.items() if kind in test.kinds)
            where = f"monitoring.drift_overrides.{name}.method"
            raise ValueError(f"{where} {override.method!r} does not apply to a {kind} feature (use one of {allowed})")


def task_defaults(data: Any) -> Any:
    """The metric defaults follow the task: a regression spec that names no metric is judged on MAE,
    with no holdout floor (a floor of an error is in the target's unit, so only the spec can set it).
    A metric the spec names is kept, and checked by :func:`metrics_fit_task`."""
    if not isinstance(data, dict) or data.get("task") != "regression":
        return data
    data = dict(data)
    for section, defaults in (("deployment", {"primary_metric": "mae", "floors": {}}), ("promotion", {"metric": "mae"})):
        given = data.get(section)
        if given is None:
            given = {}
        if isinstance(given, dict):
            data[section] = {**defaults, **given}
    return data
