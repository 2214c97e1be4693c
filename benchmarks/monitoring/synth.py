"""Synthetic monitoring windows shaped like the flights features: 20 numeric and 5 categorical columns.

The reference plays four weeks of January training data, the current window the following week
with deliberate changes: a warmer, wetter, windier week (``temp``, ``dewp``, ``humid``,
``wind_speed``, ``wind_gust``, ``precip``, ``pressure``), the calendar (``month``), a carrier
gaining share (``carrier``, ``carrier_late_rate``), seasonal destinations never seen in training
(``dest``) and higher model scores (``score``). Two
columns move mildly, below the drift threshold (``sched_hour``, ``visib``); the rest keep their
distribution. Every draw is seeded: the same sizes give the same data.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MODEL = "flights_synthetic"
CARRIERS = ["9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"]
ORIGINS = ["EWR", "JFK", "LGA"]
AIRCRAFT = ["A319", "A320", "A321", "B712", "B738", "B739", "B752", "B763", "CRJ2", "CRJ9", "E145", "E190"]
TIME_OF_DAY = ["night", "morning", "afternoon", "evening"]
_REF_DESTS = 105
#: Columns generated with a deliberate change, and with a mild one (below the drift thresholds).
SHIFTED = [
    "temp",
    "dewp",
    "humid",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "month",
    "score",
    "carrier",
    "carrier_late_rate",
    "dest",
]
MILD = ["sched_hour", "visib"]
NUMERIC = [
    "distance",
    "sched_hour",
    "sched_minute",
    "weekday",
    "month",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
    "air_time_est",
    "seats",
    "route_late_rate",
    "carrier_late_rate",
    "taxi_out_est",
    "score",
]
CATEGORICAL = ["carrier", "origin", "dest", "aircraft", "time_of_day"]
COLUMNS = NUMERIC + CATEGORICAL


def spec_dict() -> dict[str, Any]:
    """A spec for the synthetic columns (``score`` is the model output, not a feature)."""
    features: list[dict[str, Any]] = []
    for name in NUMERIC:
        if name != "score":
            features.append({"name": name, "type": "numeric", "nullable": True, "max_null_fraction": 1.0})
    cats = {"carrier": CARRIERS, "origin": ORIGINS, "dest": _dests(_REF_DESTS + 5), "aircraft": AIRCRAFT, "time_of_day": TIME_OF_DAY}
    features += [{"name": name, "type": "categorical", "categories": cats[name]} for name in CATEGORICAL]
    return {
        "name": MODEL,
        "source": {"kind": "files", "path": "/nonexistent"},
        "entity_id": "request_id",
        "time_column": "ts",
        "target": {"name": "late", "source_column": "arr_delay", "op": ">", "value": 15},
        "features": features,
    }


def _dests(n: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return [letters[i // 26 % 26] + letters[i % 26] + "X" for i in range(n)]


def _zipf_weights(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    rng.shuffle(w)
    return w / w.sum()


def make_frame(n: int, *, current: bool, seed: int) -> pd.DataFrame:
    """``n`` rows of the reference (``current=False``) or of the shifted current window."""
    rng = np.random.default_rng(seed)
    # Fixed "world" (same for reference and current): routes, carriers, aircraft.
    world = np.random.default_rng(2013)
    route_dist = np.round(np.exp(world.normal(6.8, 0.55, _REF_DESTS + 5))).clip(80, 4983)
    route_w = _zipf_weights(_REF_DESTS + 5, 1.1, world)
    route_w[_REF_DESTS:] = 0.0  # seasonal destinations: not flown in January
    route_w /= route_w.sum()
    route_late = world.beta(2, 7, _REF_DESTS + 5)
    carrier_w = _zipf_weights(len(CARRIERS), 0.9, world)
    carrier_late = np.round(world.beta(3, 9, len(CARRIERS)), 3)
    aircraft_seats = np.array([128, 150, 190, 117, 160, 180, 190, 225, 50, 76, 50, 100])
    aircraft_w = _zipf_weights(len(AIRCRAFT), 0.7, world)

    if current:
        route_w = route_w * 0.95
        route_w[_REF_DESTS:] = 0.05 / 5  # five seasonal destinations take 5 % of the flights
        route_w /= route_w.sum()
        carrier_w = carrier_w.copy()
        carrier_w[CARRIERS.index("B6")] += 0.12
        carrier_w /= carrier_w.sum()

    route = rng.choice(_REF_DESTS + 5, n, p=route_w)
    carrier = rng.choice(len(CARRIERS), n, p=carrier_w)
    aircraft = rng.choice(len(AIRCRAFT), n, p=aircraft_w)
    hour_mix = rng.random(n) < 0.55
    hour_shift = 0.3 if current else 0.0
    sched_hour = np.where(hour_mix, rng.normal(8.5 + hour_shift, 2.0, n), rng.normal(17.0 + hour_shift, 2.5, n))
    sched_hour = np.round(sched_hour).clip(5, 23).astype(np.int64)
    warm = 8.0 if current else 0.0
    temp = np.round(rng.normal(36.0 + warm, 11.0, n), 1)
    dewp = np.round(temp - rng.gamma(2.0, 6.0, n) + (6.0 - warm if current else 0.0), 1)
    humid = np.round((100 * np.exp(-(temp - dewp) / 25.0) + (10.0 if current else 0.0) + rng.normal(0, 4, n)).clip(8, 100), 2)
    wind_speed = np.round(rng.gamma(2.2, (4.6 * 1.4 if current else 4.6), n) / 1.15078) * 1.15078
    rain_share = 0.20 if current else 0.06
    precip = np.where(rng.random(n) < rain_share, np.round(rng.exponential(0.08 if current else 0.05, n), 2), 0.0)
    pressure = np.round(rng.normal(1017.0 - (4.0 if current else 0.0), 7.0, n), 1)
    fog = 0.12 if current else 0.10
    visib = np.where(rng.random(n) < fog, rng.choice([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.0], n), 10.0)
    logit = rng.normal(-1.4 + (0.45 if current else 0.0), 0.9, n) + 1.5 * route_late[route]
    day_in_window = rng.integers(0, 7 if current else 28, n)
    month = np.where(day_in_window + (32 if current else 5) > 31, 2, 1)

    df = pd.DataFrame(
        {
            "distance": route_dist[route],
            "sched_hour": sched_hour,
            "sched_minute": rng.choice(np.arange(0, 60, 5), n).astype(np.int64),
            "weekday": rng.integers(0, 7, n).astype(np.int64),
            "month": month.astype(np.int64),
            "temp": temp,
            "dewp": dewp,
            "humid": humid,
            "wind_dir": rng.choice(np.arange(0, 370, 10), n).astype(np.float64),
            "wind_speed": wind_speed,
            "wind_gust": np.where(rng.random(n) < 0.25, np.round(wind_speed * 1.4 + rng.gamma(2, 3, n), 1), np.nan),
            "precip": precip,
            "pressure": pressure,
            "visib": visib,
            "air_time_est": np.round(route_dist[route] / 8.2 + 18 + rng.normal(0, 6, n), 2),
            "seats": aircraft_seats[aircraft].astype(np.float64),
            "route_late_rate": route_late[route] + rng.normal(0, 0.01, n),
            "carrier_late_rate": carrier_late[carrier],
            "taxi_out_est": np.round(rng.gamma(4.0, 4.2, n), 1),
            "score": 1.0 / (1.0 + np.exp(-logit)),
            "carrier": np.asarray(CARRIERS, dtype=object)[carrier],
            "origin": rng.choice(np.asarray(ORIGINS, dtype=object), n, p=[0.36, 0.33, 0.31]),
            "dest": np.asarray(_dests(_REF_DESTS + 5), dtype=object)[route],
            "aircraft": np.asarray(AIRCRAFT, dtype=object)[aircraft],
            "time_of_day": np.asarray(TIME_OF_DAY, dtype=object)[np.digitize(sched_hour, [6, 12, 18])],
        }
    )
    for col, share in (("temp", 0.02), ("dewp", 0.02), ("humid", 0.02), ("wind_dir", 0.03), ("wind_speed", 0.02), ("pressure", 0.1)):
        df.loc[rng.random(n) < share, col] = np.nan
    return df[COLUMNS]


def write_window(df: pd.DataFrame, root: Path, model: str, first_day: date, days: int = 7, parts_per_day: int = 2) -> tuple[date, date]:
    """Write ``df`` as ``<root>/inference/<model>/day=YYYY-MM-DD/part-NNNNN.parquet`` over ``days`` days."""
    bounds = np.linspace(0, len(df), days * parts_per_day + 1).round().astype(int)
    for i in range(days * parts_per_day):
        day = first_day + timedelta(days=i // parts_per_day)
        folder = root / "inference" / model / f"day={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        df.iloc[bounds[i] : bounds[i + 1]].to_parquet(folder / f"part-{i % parts_per_day:05d}.parquet", index=False)
    return first_day, first_day + timedelta(days=days - 1)
