from __future__ import annotations

import pytest

from tooling.flights import COLUMNS, FEATURES

pytestmark = pytest.mark.integration


def test_outcome_table_shape_and_leaks(flights, spec):
    assert list(flights.columns) == COLUMNS
    assert len(flights) > 320_000  # landed flights of 2013
    assert flights["flight_id"].is_unique
    assert set(FEATURES) == set(spec.feature_names)
    assert not {"dep_delay", "arr_time", "dep_time", "air_time"} & set(flights.columns)
    late = spec.target.derive(flights["arr_delay"]).mean()
    assert 0.18 < late < 0.30  # ~24 % late arrivals
    assert flights["sched_dep"].dt.year.eq(2013).all()


def test_weather_is_joined_at_the_scheduled_hour(flights):
    row = flights[flights["flight_id"] == "20130101-UA1545-EWR-0515"].iloc[0]
    assert row["temp"] == pytest.approx(39.02) and row["sched_hour"] == 5
    assert flights["temp"].notna().mean() > 0.99
    # seasonal drift the loop must see: mean temperature in February vs July
    by_month = flights.groupby("month")["temp"].mean()
    assert by_month[2] < 40 < 75 < by_month[7]
