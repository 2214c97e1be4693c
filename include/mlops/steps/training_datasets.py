"""The training run's MLflow dataset inputs: the training window and the holdout, each tagged with
the ids of the label batches it came from, with a digest and a schema computed column by column
(MLflow's own look at every cell: seconds on a three-month window).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.runtime import Runtime
    from include.mlops.steps.training_window import Window


def log_datasets(
    rt: Runtime, train_df: pd.DataFrame, holdout_df: pd.DataFrame, window: Window, train_batches: list[int], holdout_batches: list[int]
) -> None:
    """Log the training window and the holdout as the run's MLflow dataset inputs, tagged with the
    batches they came from."""
    import mlflow
    import mlflow.data.pandas_dataset

    target = rt.spec.target.name
    for df, name, context, batches, (start, end) in (
        (train_df, "training_window", "training", train_batches, (window.train_start, window.train_end)),
        (holdout_df, "holdout", "holdout", holdout_batches, (window.holdout_start, window.holdout_end)),
    ):
        ds = mlflow.data.pandas_dataset.from_pandas(
            df, source=str(rt.lake.pool), name=f"{name} {start}..{end}", targets=target, digest=dataset_digest(df)
        )
        ds.schema = dataset_schema(df)  # a cached property: given, not inferred cell by cell
        mlflow.log_input(ds, context=context, tags={"batch_ids": batch_ids_tag(batches), "days": f"{start}..{end}"})


#: MLflow refuses a dataset input's tag longer than this
MAX_INPUT_TAG = 500


def batch_ids_tag(batches: list[int]) -> str:
    """The batch ids, comma-separated; when that is too long for a tag, the first and last ones
    and the count (the full lists are the run's tags ``mlops.train_batch_ids`` and
    ``mlops.holdout_batch_ids``)."""
    full = ",".join(map(str, batches))
    if len(full) <= MAX_INPUT_TAG:
        return full
    head, tail, n = ",".join(map(str, batches[:20])), ",".join(map(str, batches[-20:])), len(batches)
    return f"{head},...,{tail} ({n} batches)"[:MAX_INPUT_TAG]


def _all_str(s: pd.Series) -> bool:
    return s.dtype.kind == "O" and bool(s.map(type).eq(str).all())


def dataset_digest(df: pd.DataFrame) -> str:
    """What ``mlflow.data.digest_utils.compute_pandas_digest`` returns, without typing every cell
    of the numeric columns (3 CPU s on a three-month training window; 0.1 s this way). Equality
    with MLflow's own is a unit test."""
    import numpy as np
    import pandas as pd
    from mlflow.data.digest_utils import MAX_ROWS, get_normalized_md5_digest

    trimmed = df.head(MAX_ROWS)
    strings = pd.Index([c for c in df.columns if _all_str(df[c])])
    trimmed = trimmed[strings.union(trimmed.select_dtypes(include=[np.number]).columns)]
    parts = [pd.util.hash_pandas_object(trimmed).values, np.int64(len(df)), *[str(c).encode() for c in df.columns]]
    return str(get_normalized_md5_digest(parts))


def dataset_schema(df: pd.DataFrame) -> Any:
    """What ``mlflow.types.utils._infer_schema`` returns for a frame, with numeric and all-string
    columns judged by pandas instead of a Python loop over every cell. Any other column goes
    through MLflow's own per-column inference. Equality with MLflow's own is a unit test."""
    from mlflow.types.schema import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.utils import _infer_pandas_column, _infer_required

    cols: list[ColSpec | TensorSpec] = []
    for name in df.columns:
        s = df[name]
        if s.dtype.kind in "fiub":  # numpy numbers: a missing value can only be a float NaN
            cols.append(ColSpec(type=_infer_pandas_column(s), name=name, required=not bool(s.isna().any())))
        elif len(s) and _all_str(s):
            cols.append(ColSpec(type=DataType.string, name=name, required=True))
        else:
            cols.append(ColSpec(type=_infer_pandas_column(s), name=name, required=_infer_required(s)))
    return Schema(cols)
