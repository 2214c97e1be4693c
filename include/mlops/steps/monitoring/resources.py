"""The serving process's resources and each version's own inference time, for the early window and
continuous monitoring.

* The serving API's Prometheus ``/metrics`` (:func:`serving_process`) gives the process's CPU
  seconds, resident memory, start time and pid. CPU cores are the CPU seconds used between two
  readings of the same process over the wall time between them (:func:`cpu_use`): the early window
  reads at deployment and at judgment; a monitoring pass reads once and compares with the reading
  the previous pass stored (ops-store state ``serving_process_reading``), or, with no earlier reading
  of this process (first pass, a restart, another uvicorn worker answered), with the process's
  start: its lifetime average, and the summary says which. Memory is the reading's resident set.
* Each row of the inference log carries ``model_ms``, the duration of the predict call of the
  version that scored it (:mod:`include.mlops.serving.scoring`); the request's ``latency_ms`` is the
  same for a champion's and a canary's rows of one micro-batch, so versions are compared on
  ``model_ms`` (:func:`model_p95_ms`, ``domain.policy.latency_ratio``).

:func:`check_serving` (pure) adds both to a monitoring :class:`~.checks.Summary`: warnings
``serving_memory``, ``serving_cpu`` (over ``monitoring.max_rss_mb`` / ``max_cpu_cores``) and, for a
challenger, ``latency_ratio`` (its p95 inference time over the champion's in the same window, over
``monitoring.max_latency_ratio``); :func:`alert_serving` raises a ``monitoring_warning`` alert for each
and resolves the process's when a later reading is within bounds. An unreachable ``/metrics`` is
reported as ``unknown``, never a warning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from include.mlops.domain.policy import latency_ratio

if TYPE_CHECKING:
    import pandas as pd

    from include.mlops.domain.spec import Monitoring
    from include.mlops.runtime import Runtime
    from include.mlops.steps.monitoring.checks import Summary

log = logging.getLogger(__name__)

#: Warnings about the serving process as a whole (one alert each, whatever the version).
PROCESS_CODES = ("serving_memory", "serving_cpu")
#: Warning about a challenger's own inference time against the champion's.
LATENCY_RATIO = "latency_ratio"
#: Ops-store state (per model) holding the previous pass's reading of the serving process.
READING_KEY = "serving_process_reading"
#: Readings closer together than this give no CPU figure (too noisy).
MIN_SPAN_S = 1.0

_METRICS = {
    "process_cpu_seconds_total": "cpu_seconds",
    "process_resident_memory_bytes": "rss_mb",
    "process_start_time_seconds": "started",
    "mlops_serving_worker_pid": "pid",
}


# -- reading the serving process ---------------------------------------------------------------
def parse_metrics(text: str, at: float) -> dict[str, float] | None:
    """CPU seconds, resident memory (MB), start time and pid from a Prometheus exposition read at
    ``at`` (Unix time); None without a CPU figure."""
    out: dict[str, float] = {"at": at}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        key = _METRICS.get(name)
        if key is None:
            continue
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue
        out[key] = value / 2**20 if key == "rss_mb" else value
    return out if "cpu_seconds" in out else None


def serving_process(url: str) -> dict[str, float] | None:
    """The serving process's reading from its ``/metrics`` (see :func:`parse_metrics`), or None when
    it cannot be read."""
    import httpx

    try:
        resp = httpx.get(f"{url}/metrics", timeout=5.0)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    return parse_metrics(resp.text, time.time())


def same_process(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two readings of the same process (same pid and start time; readings without them match)."""
    return a.get("pid") == b.get("pid") and a.get("started") == b.get("started")


def cpu_use(start: Mapping[str, Any] | None, end: Mapping[str, Any] | None, *, since_start: bool = False) -> dict[str, Any]:
    """CPU cores used between two readings of the same process: ``{"cores", "basis", "span_s"}``.

    ``basis`` is ``since_reading`` (between ``start`` and ``end``), ``since_process_start`` (with
    ``since_start`` and no usable earlier reading: the process's lifetime average) or ``unknown``."""
    if not end:
        return {"cores": None, "basis": "unknown", "span_s": None}
    if start and same_process(start, end):
        span = float(end["at"]) - float(start["at"])
        used = float(end["cpu_seconds"]) - float(start["cpu_seconds"])
        if span >= MIN_SPAN_S and used >= 0:
            return {"cores": used / span, "basis": "since_reading", "span_s": round(span, 1)}
    started = end.get("started")
    if since_start and started is not None and float(end["at"]) - float(started) >= MIN_SPAN_S:
        span = float(end["at"]) - float(started)
        return {"cores": float(end["cpu_seconds"]) / span, "basis": "since_process_start", "span_s": round(span, 1)}
    return {"cores": None, "basis": "unknown", "span_s": None}


def process_reading(previous: Mapping[str, Any] | None, now: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a monitoring pass reports about the serving process (JSON-able)."""
    if now is None:
        return {"status": "unknown", "reason": "the serving API's /metrics could not be read"}
    cpu = cpu_use(previous, now, since_start=True)
    rss = now.get("rss_mb")
    return {
        "status": "measured",
        "rss_mb": round(float(rss), 1) if rss is not None else None,
        "cpu_cores": round(cpu["cores"], 4) if cpu["cores"] is not None else None,
        "cpu_basis": cpu["basis"],
        "cpu_span_s": cpu["span_s"],
        "pid": int(now["pid"]) if now.get("pid") is not None else None,
        "read_at": datetime.fromtimestamp(float(now["at"]), UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
    }


def pass_resources(rt: Runtime, shared: dict[str, Any] | None = None) -> dict[str, Any]:
    """The serving process's reading, once per monitoring pass (``shared`` carries it to the pass's
    other windows); the raw reading is kept for the next pass's CPU figure."""
    if shared is not None and "resources" in shared:
        found: dict[str, Any] = shared["resources"]
        return found
    now = serving_process(rt.settings.serving_url)
    previous = rt.store.get_state(rt.model_name, READING_KEY)
    reading = process_reading(previous if isinstance(previous, dict) else None, now)
    if now is not None:
        rt.store.set_state(rt.model_name, READING_KEY, dict(now))
    if shared is not None:
        shared["resources"] = reading
    return reading


# -- judging (pure) ------------------------------------------------------------------------------
def model_p95_ms(rows: pd.DataFrame) -> float | None:
    """p95 of ``model_ms`` over scored rows (None: no row carries it, e.g. logged before schema v8)."""
    import numpy as np

    if "model_ms" not in rows.columns or "status" not in rows.columns:
        return None
    values = rows.loc[rows["status"] == "ok", "model_ms"].dropna().astype(float)
    return float(np.percentile(values, 95)) if len(values) else None


def check_serving(s: Summary, frame: pd.DataFrame, mine: pd.DataFrame, resources: Mapping[str, Any] | None, mon: Monitoring) -> None:
    """The version's own p95 inference time (and a challenger's ratio to the champion's in the same
    window), and the serving process's reading, into ``s.system``; warnings over the spec's limits."""
    own = model_p95_ms(mine)
    s.system["model_p95_ms"] = own
    if s.role != "champion" and "route" in frame.columns:
        champion = model_p95_ms(frame[(frame["route"] == "champion") & (frame["model_version"].astype(str) != s.version)])
        ratio = latency_ratio(own, champion)
        s.system.update(champion_model_p95_ms=champion, latency_ratio=ratio)
        if ratio is not None and ratio > mon.max_latency_ratio:
            s.add(
                "warning",
                LATENCY_RATIO,
                f"p95 inference time {own:.1f} ms is {ratio:.2f}x the champion's {champion:.1f} ms > {mon.max_latency_ratio:.2f}x",
            )
    if resources is None:
        return
    s.system["process"] = dict(resources)
    if resources.get("status") != "measured":
        return
    rss, cores = resources.get("rss_mb"), resources.get("cpu_cores")
    if rss is not None and rss > mon.max_rss_mb:
        s.add("warning", "serving_memory", f"serving process memory {rss:.0f} MB > {mon.max_rss_mb:.0f} MB")
    if cores is not None and cores > mon.max_cpu_cores:
        basis = str(resources.get("cpu_basis", "")).replace("_", " ")
        s.add("warning", "serving_cpu", f"serving process CPU {cores:.2f} cores ({basis}) > {mon.max_cpu_cores:.2f}")


# -- alerts ----------------------------------------------------------------------------------------
def alert_serving(rt: Runtime, s: Summary) -> None:
    """A ``monitoring_warning`` alert per warning of :func:`check_serving` (the process's keyed by
    code alone: one incident whichever version's window saw it); a measured reading within bounds
    resolves the process's open ones."""
    from include.mlops.adapters.alerts import raise_alert, resolve_alerts

    payload = {"version": s.version, "window_start": s.window_start, "window_end": s.window_end, "system": s.system}
    for code, reason in zip(s.reason_codes, s.reasons, strict=False):
        if code in PROCESS_CODES:
            key = code
        elif code == LATENCY_RATIO:
            key = f"{code}:v{s.version}"
        else:
            continue
        raise_alert(
            rt.store,
            rt.model_name,
            severity="warning",
            kind="monitoring_warning",
            dedupe_key=key,
            message=f"v{s.version} ({s.role}) on {s.window_start[:10]}: {reason}",
            payload=payload,
        )
    if (s.system.get("process") or {}).get("status") == "measured":
        for code in PROCESS_CODES:
            if code not in s.reason_codes:
                resolve_alerts(rt.store, rt.model_name, dedupe_key=code)
