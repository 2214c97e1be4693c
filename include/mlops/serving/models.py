"""Which models serve: polling the registry, loading new versions in the background, atomic hot swap.

A poller thread reads :func:`include.mlops.adapters.registry.serving_config` every ``poll_seconds`` (and
``POST /admin/reload`` forces a poll now). A version not loaded yet is loaded with
:func:`load_sklearn` (the version the alias points at, resolved once, so a load cannot race an
alias move), checked on a probe row, and only then swapped in by
replacing one immutable :class:`ServingState`: a request (a micro-batch) reads the state once, so
it sees the old models or the new ones, never a mix; nothing restarts and no request fails.

Models load as data only: skops with the loop's trust list, never the artifact's, never pickle or a
model's ``code/``, and only when the model file's sha256 is the one recorded at registration
(:mod:`include.mlops.adapters.model_artifacts`).

When a version cannot be loaded (missing or corrupt artifact, refused as untrusted, failing probe),
the alias keeps its last good model, the failure is reported in ``/health`` and counted in the
``mlops_serving_model_loads`` metric, and the version is retried after ``retry_failed_seconds``
(or at once on ``/admin/reload``). With no champion loaded at all, ``/predict`` answers 503.

Each model of the deployment has its own manager (its own registered model, aliases and poller
thread); ``/health`` reports, per model, the versions it holds in memory and their size as
pickled bytes (:func:`pickled_bytes`, an estimate of the memory the model objects take).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.mlops.domain.roles import CANARY, CHALLENGER, CHAMPION
from include.mlops.domain.routing import bucket, goes_to_challenger

if TYPE_CHECKING:
    from include.mlops.adapters.registry import ServingConfig
    from include.mlops.domain.spec import Spec
    from include.mlops.serving.metrics import ModelMetrics, ServingMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    version: str
    model: Any
    loaded_at: datetime
    load_seconds: float
    #: What scores validated rows without a DataFrame (:mod:`.direct`), when it reproduces the model exactly.
    direct: Any = None
    #: Why the direct path is not used (empty when it is).
    direct_note: str = ""
    #: Size of the model object pickled (protocol 5): an estimate of the memory it takes (None: not picklable).
    pickle_bytes: int | None = None


@dataclass(frozen=True)
class ServingState:
    """What this process answers with right now (replaced as a whole on every change)."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    mode: str | None = None  # canary | shadow, when a challenger serves
    canary_share: float = 0.0

    @property
    def ready(self) -> bool:
        return self.champion is not None

    @property
    def canary(self) -> bool:
        """A challenger takes a share of the traffic (canary mode with a share above 0)."""
        return self.challenger is not None and self.mode == CANARY and self.canary_share > 0

    def takes_canary(self, entity_id: str, salt: str) -> bool:
        """True when this entity's requests go to the challenger: the one canary predicate."""
        return self.canary and goes_to_challenger(bucket(entity_id, salt), self.canary_share)

    def versions(self) -> dict[str, str | None]:
        return {
            CHAMPION: self.champion.version if self.champion else None,
            CHALLENGER: self.challenger.version if self.challenger else None,
        }

    def describe(self) -> dict[str, Any]:
        return {**self.versions(), "mode": self.mode, "canary_share": self.canary_share if self.challenger else None}


@dataclass(frozen=True)
class LoadFailure:
    alias: str
    version: str
    error: str
    at: datetime
    monotonic: float

    def as_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "version": self.version, "error": self.error, "at": self.at.isoformat(timespec="seconds")}


def load_sklearn(model_name: str, version: str, spec: Spec | None = None) -> Any:
    """The registered scikit-learn model ``model_name`` version ``version``, loaded as data only
    (:func:`include.mlops.adapters.model_artifacts.load_model_version`: skops with the loop's trust
    list, the sha256 recorded at registration); a refused version raises ``UntrustedModelError``
    and, like a corrupt one, the alias keeps its last good model and ``/health`` says why. ``spec``
    (whose trust list applies) is the model's own; ``None``: the default model's (``MLOPS_SPEC``)."""
    from include.mlops.adapters.model_artifacts import load_model_version
    from include.mlops.adapters.store import Store
    from include.mlops.domain.spec import load_spec
    from include.mlops.settings import get_settings

    settings = get_settings()
    store = Store.open(settings.ops_db_url)
    spec = spec if spec is not None else load_spec(settings.spec_path)
    return load_model_version(store, spec, model_name, version, tracking_uri=settings.mlflow_tracking_uri)


def pickled_bytes(model: Any) -> int | None:
    """The size of ``model`` pickled (protocol 5, out-of-band buffers counted): close to the memory
    its arrays take, cheap enough at load time; None when the object cannot be pickled."""
    import pickle

    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(model, protocol=5, buffer_callback=buffers.append)
    except Exception:
        return None
    return len(data) + sum(memoryview(b).nbytes for b in buffers)


def _now() -> datetime:
    return datetime.now(UTC)


class ModelManager:
    """Keeps :attr:`state` in step with the registry's ``champion`` / ``challenger`` aliases."""

    def __init__(
        self,
        model_name: str,
        config: Callable[[], ServingConfig],
        *,
        loader: Callable[[str], Any] | None = None,
        probe: Callable[[Any], tuple[Any, str] | None] | None = None,
        poll_seconds: float = 2.0,
        retry_failed_seconds: float = 30.0,
        metrics: ServingMetrics | ModelMetrics | None = None,
        spec: Spec | None = None,
    ):
        self.model_name = model_name
        self._config = config
        #: no spec: the default model (load_sklearn reads MLOPS_SPEC); else the model's own trust list
        self._loader = loader or (
            (lambda version: load_sklearn(model_name, version))
            if spec is None
            else (lambda version: load_sklearn(model_name, version, spec))
        )
        self._probe = probe
        self.poll_seconds = poll_seconds
        self.retry_failed_seconds = retry_failed_seconds
        self._metrics = metrics.for_model(model_name) if metrics is not None else None
        self._state = ServingState()
        self._cache: dict[str, LoadedModel] = {}
        self._failures: dict[str, LoadFailure] = {}
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.desired: ServingConfig | None = None
        self.last_poll: datetime | None = None
        self.last_poll_error: str | None = None
        self.last_load_error: LoadFailure | None = None
        self.swaps = 0

    @property
    def state(self) -> ServingState:
        return self._state

    @property
    def started(self) -> bool:
        """The poller thread runs (a lazily loaded model's manager starts on its first request)."""
        return self._thread is not None

    # -- polling --------------------------------------------------------------------------------
    def start(self) -> None:
        """Poll now and then every ``poll_seconds``, on a background thread."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:  # never let the poller die
                log.exception("registry poll failed unexpectedly")
            self._stop.wait(self.poll_seconds)

    def poll(self, force: bool = False) -> ServingState:
        """Read the registry and swap in what it asks for; ``force`` retries failed versions now."""
        with self._poll_lock:
            try:
                cfg = self._config()
            except Exception as exc:
                first = self.last_poll_error is None  # warn once per outage, not every poll
                self.last_poll_error = f"{_now().isoformat(timespec='seconds')} {type(exc).__name__}: {exc}"[:1000]
                if self._metrics:
                    self._metrics.polls.labels(result="error").inc()
                log.log(
                    logging.WARNING if first else logging.DEBUG,
                    "cannot read the registry for %s, keeping what serves: %s",
                    self.model_name,
                    exc,
                )
                return self._state
            if self.last_poll_error is not None:
                log.info("registry reachable again for %s", self.model_name)
            self.desired = cfg
            self.last_poll = _now()
            self.last_poll_error = None
            if self._metrics:
                self._metrics.polls.labels(result="ok").inc()
                self._metrics.last_poll.set(self.last_poll.timestamp())
            current = self._state
            champion = self._resolve(CHAMPION, cfg.champion, current.champion, force)
            challenger = self._resolve(CHALLENGER, cfg.challenger, current.challenger, force)
            new = ServingState(champion, challenger, cfg.mode if challenger else None, cfg.canary_share)
            if new != current:
                self._state = new  # the swap: one reference assignment
                self.swaps += 1
                log.info("now serving %s: %s (was %s)", self.model_name, new.describe(), current.describe())
                if self._metrics:
                    self._metrics.set_serving(new.versions())
            keep = {m.version for m in (champion, challenger, current.champion) if m is not None}
            for version in list(self._cache):
                if version not in keep:
                    del self._cache[version]
            return self._state

    def _resolve(self, alias: str, wanted: str | None, current: LoadedModel | None, force: bool) -> LoadedModel | None:
        """The model to serve for ``alias``: the wanted version if it loads, else the last good one."""
        if wanted is None:
            return None
        if current is not None and current.version == wanted:
            return current
        cached = self._cache.get(wanted)
        if cached is not None:
            return cached
        failed = self._failures.get(wanted)
        if failed is not None and not force and time.monotonic() - failed.monotonic < self.retry_failed_seconds:
            return current
        started = time.perf_counter()
        prepared: tuple[Any, str] | None = None
        try:
            model = self._loader(wanted)
            if self._probe is not None:
                prepared = self._probe(model)
        except Exception as exc:
            failure = LoadFailure(alias, wanted, f"{type(exc).__name__}: {exc}"[:2000], _now(), time.monotonic())
            self._failures[wanted] = failure
            self.last_load_error = failure
            if self._metrics:
                self._metrics.model_loads.labels(alias=alias, version=wanted, result="failure").inc()
            keeping = f"keeping version {current.version}" if current else "nothing to fall back to"
            log.error("cannot load %s version %s for %s (%s): %s", self.model_name, wanted, alias, keeping, failure.error)
            return current
        direct, note = prepared if prepared is not None else (None, "")
        loaded = LoadedModel(wanted, model, _now(), time.perf_counter() - started, direct, note, pickled_bytes(model))
        self._failures.pop(wanted, None)
        self._cache[wanted] = loaded
        if self._metrics:
            self._metrics.model_loads.labels(alias=alias, version=wanted, result="success").inc()
        log.info(
            "loaded %s version %s for %s in %.2fs (%s)",
            self.model_name,
            wanted,
            alias,
            loaded.load_seconds,
            "direct input" if direct is not None else f"DataFrame input: {note}" if note else "DataFrame input",
        )
        return loaded

    # -- reporting ------------------------------------------------------------------------------
    def unavailable_reason(self) -> str:
        """Why there is no champion to answer with (the 503 message)."""
        if self.desired is None:
            why = (
                f"the registry has not been read yet ({self.last_poll_error})"
                if self.last_poll_error
                else "the registry has not been read yet"
            )
        elif self.desired.champion is None:
            why = f"model {self.model_name!r} has no 'champion' alias in the registry"
        else:
            failure = self._failures.get(self.desired.champion)
            why = f"champion version {self.desired.champion} could not be loaded" + (f": {failure.error}" if failure else " yet")
        return f"no champion model is serving: {why}"

    def health(self) -> dict[str, Any]:
        state = self._state
        desired = self.desired
        pending_failures = []
        if desired is not None:
            for alias, version in ((CHAMPION, desired.champion), (CHALLENGER, desired.challenger)):
                serving = state.versions()[alias]
                failure = self._failures.get(version) if version else None
                if version is not None and version != serving and failure is not None:
                    pending_failures.append(failure.as_dict())
        return {
            "model": self.model_name,
            "ready": state.ready,
            "serving": state.describe(),
            "registry": None
            if desired is None
            else {
                CHAMPION: desired.champion,
                CHALLENGER: desired.challenger,
                "mode": desired.mode,
                "canary_share": desired.canary_share,
            },
            "last_successful_poll": self.last_poll.isoformat(timespec="seconds") if self.last_poll else None,
            "last_poll_error": self.last_poll_error,
            "last_load_error": self.last_load_error.as_dict() if self.last_load_error else None,
            "load_errors": pending_failures,
            "swaps": self.swaps,
            "memory": self.memory(),
            "input_path": {
                m.version: "direct" if m.direct is not None else f"dataframe ({m.direct_note})" if m.direct_note else "dataframe"
                for m in (state.champion, state.challenger)
                if m is not None
            },
        }

    def memory(self) -> dict[str, Any]:
        """What the versions held in memory (serving, and the previous champion kept for a rollback)
        take, as pickled bytes (:func:`pickled_bytes`)."""
        held = {m.version: m.pickle_bytes for m in list(self._cache.values())}
        return {
            "held_versions": sorted(held),
            "model_pickle_bytes": sum(b for b in held.values() if b is not None),
            "model_pickle_bytes_by_version": held,
        }


def check_model(model: Any, probe: Any, task: str = "binary_classification") -> None:
    """A freshly loaded model must score the probe rows (a DataFrame): a classifier two probabilities
    per row, finite, in [0, 1]; a regressor (the spec's ``task``) one finite value per row."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    method = "predict" if task == "regression" else "predict_proba"
    if not hasattr(model, method):
        raise TypeError(f"{type(model).__name__} has no {method} (the spec's task is {task})")
    n = len(probe)
    with threadpool_limits(limits=1):  # as on the predictor thread
        out = np.asarray(getattr(model, method)(probe))
    if task == "regression":
        if out.shape != (n,):
            raise ValueError(f"predict on the probe rows returned shape {out.shape}, expected ({n},)")
        if not np.issubdtype(out.dtype, np.number) or not np.all(np.isfinite(out)):
            raise ValueError(f"predict on the probe rows returned {out.tolist()[:5]}, not finite numbers")
        return
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise ValueError(f"predict_proba on the probe row returned shape {out.shape}, expected ({n}, 2)")
    if not np.all(np.isfinite(out)) or out.min() < 0 or out.max() > 1:
        raise ValueError(f"predict_proba on the probe row returned {out.tolist()}, not probabilities")
