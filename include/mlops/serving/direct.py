"""Direct input: score validated rows without building a DataFrame for the model's preprocessing step.

Where a single-row ``predict_proba`` of the default pipeline goes (measured with cProfile on the
2-core machine): about half of its ~9 ms is the ``ColumnTransformer`` + ``OrdinalEncoder`` step,
nearly all of it per-call checks and pandas indexing, not encoding three strings. For a fitted
``Pipeline`` whose first step is a ``ColumnTransformer`` made only of ``OrdinalEncoder``\\ s
(``handle_unknown="use_encoded_value"``, no infrequent categories) and pass-through columns, and
whose last step was fitted on that step's NumPy output, :class:`DirectInput` builds the same
matrix straight from the validated rows (a dict lookup per categorical value) and calls the final
estimator's own public ``predict_proba`` on it. The model itself is untouched.

It is used only when it gives *exactly* what the pipeline gives: :func:`compile_direct` checks a
freshly loaded model on a set of rows made from the spec (every category of every categorical
feature, an unknown category, nulls where the spec allows them, numbers across their ranges) and
compares both paths' probabilities bit for bit. Any other pipeline shape, or any difference,
keeps the generic path (``predict_proba`` on a DataFrame) and says why in ``/health``.
``MLOPS_SERVING_DIRECT_INPUT=0`` turns it off.

A regression model (the spec's ``task``) is served the same way with ``predict`` in place of
``predict_proba``: the final estimator's own ``predict`` on the same matrix, used only when it gives
the pipeline's predicted values bit for bit on the check rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from include.mlops.domain.spec import Spec
    from include.mlops.serving.schema import Row
    from include.mlops.serving.scoring import FrameBuilder

#: A category no spec uses, to check the unknown-category branch.
UNKNOWN = "\x00mlops-unknown-category"


class Unsupported(Exception):
    """The pipeline's shape is not one :class:`DirectInput` reproduces."""


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class _Encoded:
    """One OrdinalEncoder column: value -> code, with the encoder's codes for unknown and missing."""

    __slots__ = ("codes", "index", "missing", "unknown")

    def __init__(self, index: int, categories: Any, unknown: float, missing_code: float):
        self.index = index
        self.unknown = unknown
        self.codes: dict[Any, float] = {}
        has_missing = False
        for code, category in enumerate(categories):
            if _is_missing(category):
                has_missing = True
            else:
                self.codes[category] = float(code)
        # a missing value seen in training encodes as ``encoded_missing_value``; never seen, it is unknown
        self.missing = missing_code if has_missing else unknown


class DirectInput:
    """The final estimator of a fitted pipeline, fed a matrix built straight from validated rows."""

    def __init__(self, final: Any, encoded: list[_Encoded], order: list[tuple[str, int]]):
        self.final = final
        self._encoded = encoded
        self._order = order  # output column -> ("cat", k) or ("num", feature index)

    def matrix(self, rows: Sequence[Row]) -> np.ndarray:
        import numpy as np

        z = np.empty((len(rows), len(self._order)), dtype=np.float64)
        for j, (kind, k) in enumerate(self._order):
            if kind == "cat":
                enc = self._encoded[k]
                codes, unknown, missing, i = enc.codes, enc.unknown, enc.missing, enc.index
                z[:, j] = [missing if r.values[i] is None else codes.get(r.values[i], unknown) for r in rows]
            else:
                z[:, j] = [math.nan if r.values[k] is None else r.values[k] for r in rows]
        return z

    def predict_proba(self, rows: Sequence[Row]) -> Any:
        return self.final.predict_proba(self.matrix(rows))

    def predict(self, rows: Sequence[Row]) -> Any:
        return self.final.predict(self.matrix(rows))


def build(model: Any, feature_names: Sequence[str], task: str = "binary_classification") -> DirectInput:
    """The direct path for ``model`` (a ``task`` model: it needs ``predict_proba``, or ``predict``
    for a regressor); raises :class:`Unsupported` with the reason."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    if type(model) is not Pipeline:
        raise Unsupported(f"the model is a {type(model).__name__}, not a scikit-learn Pipeline")
    steps = [est for _, est in model.steps if est not in (None, "passthrough")]
    if len(steps) != 2:
        raise Unsupported(f"the pipeline has {len(steps)} active steps, not a ColumnTransformer and an estimator")
    pre, final = steps
    if type(pre) is not ColumnTransformer:
        raise Unsupported(f"the pipeline's first step is a {type(pre).__name__}, not a ColumnTransformer")
    if getattr(pre, "sparse_output_", False):
        raise Unsupported("the ColumnTransformer's output is sparse")
    if getattr(pre, "_sklearn_output_config", {}).get("transform", "default") != "default" or hasattr(final, "feature_names_in_"):
        raise Unsupported("the final estimator was fitted on a DataFrame (set_output), not on the NumPy matrix")
    method = "predict" if task == "regression" else "predict_proba"
    if not hasattr(final, method):
        raise Unsupported(f"{type(final).__name__} has no {method}")
    position = {name: i for i, name in enumerate(feature_names)}
    encoded: list[_Encoded] = []
    order: list[tuple[str, int]] = []
    for name, trans, columns in pre.transformers_:
        if (isinstance(trans, str) and trans == "drop") or (not isinstance(columns, str) and len(columns) == 0):
            continue  # no output columns (an empty selection is left unfitted)
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise Unsupported(f"transformer {name!r} selects columns by position or pattern, not by name")
        unknown_cols = [c for c in columns if c not in position]
        if unknown_cols:
            raise Unsupported(f"transformer {name!r} uses columns that are not features of the spec: {unknown_cols}")
        if type(trans) is OrdinalEncoder:
            if trans.handle_unknown != "use_encoded_value" or getattr(trans, "_infrequent_enabled", False):
                raise Unsupported(f"OrdinalEncoder {name!r} raises on unknown categories or groups infrequent ones")
            if np.dtype(trans.dtype) != np.float64:
                raise Unsupported(f"OrdinalEncoder {name!r} outputs {np.dtype(trans.dtype)}, not float64")
            for col, cats in zip(columns, trans.categories_, strict=True):
                order.append(("cat", len(encoded)))
                encoded.append(_Encoded(position[col], cats, float(trans.unknown_value), float(trans.encoded_missing_value)))
        elif (isinstance(trans, str) and trans == "passthrough") or (
            type(trans) is FunctionTransformer and trans.func is None and trans.inverse_func is None
        ):
            for col in columns:
                order.append(("num", position[col]))
        else:
            raise Unsupported(f"transformer {name!r} is a {type(trans).__name__} (only OrdinalEncoder and pass-through are reproduced)")
    if not order:
        raise Unsupported("the ColumnTransformer outputs no columns")
    return DirectInput(final, encoded, order)


def check_rows(spec: Spec, probe: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Rows that exercise every branch of the direct path: every category of every categorical
    feature, an unknown category, nulls where the spec allows them, numbers across their ranges."""
    features = list(spec.features)
    n = max([len(f.categories or []) for f in features] + [8])
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        values: list[Any] = []
        for f in features:
            if f.type == "categorical":
                cats = f.categories or [UNKNOWN]
                values.append(cats[i % len(cats)])
            else:
                lo = f.min if f.min is not None else -1000.0
                hi = f.max if f.max is not None else lo + 2000.0
                x = lo + (hi - lo) * ((i * 0.6180339887) % 1.0)
                values.append(round(x) if f.type == "integer" else x)
        rows.append(tuple(values))
    rows.append(tuple(UNKNOWN if f.type == "categorical" else v for f, v in zip(features, probe, strict=True)))
    rows.append(tuple(None if f.nullable else v for f, v in zip(features, probe, strict=True)))
    rows.append(probe)
    return rows


def _output(task: str, model: Any, x: Any) -> Any:
    """What the check compares: every column of ``predict_proba``, or a regressor's ``predict``."""
    return model.predict(x) if task == "regression" else model.predict_proba(x)


def compile_direct(model: Any, spec: Spec, frames: FrameBuilder) -> tuple[DirectInput | None, str]:
    """``(direct path, "")`` when it reproduces ``model.predict_proba`` (a regressor's ``predict``)
    exactly on the check rows, else ``(None, why)``."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from include.mlops.serving.schema import Row

    try:
        direct = build(model, spec.feature_names, spec.task)
    except Unsupported as exc:
        return None, str(exc)
    except Exception as exc:  # a shape build() did not foresee: the DataFrame path, never a failed load
        return None, f"the pipeline could not be read for direct input: {type(exc).__name__}: {exc}"[:500]
    rows = [Row(f"check-{i}", None, values) for i, values in enumerate(check_rows(spec, frames.probe_row(spec)))]
    try:
        with threadpool_limits(limits=1):  # as on the predictor thread
            expected = np.asarray(_output(spec.task, model, frames.frame(rows)))
            got = np.asarray(_output(spec.task, direct, rows))
            one = [np.asarray(_output(spec.task, direct, [r])) for r in rows[-3:]]  # single rows too: the 1-client path
            one_expected = [np.asarray(_output(spec.task, model, frames.frame([r]))) for r in rows[-3:]]
    except Exception as exc:
        return None, f"the direct path failed on the check rows: {type(exc).__name__}: {exc}"[:500]
    if (
        got.shape != expected.shape
        or not np.array_equal(got, expected)
        or not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(one, one_expected, strict=True))
    ):
        what = "predicted values" if spec.task == "regression" else "probabilities"
        return None, f"the direct path's {what} differ from the pipeline's on the check rows"
    return direct, ""
