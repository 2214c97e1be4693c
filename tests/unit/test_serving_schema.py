from __future__ import annotations

import json
from datetime import datetime

import pytest

from include.mlops.serving.schema import RequestRejected, RequestSchema

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def schema(spec):
    return RequestSchema(spec, max_rows=5)


@pytest.fixture
def row(spec):
    values = {
        "carrier": "AA",
        "origin": "JFK",
        "dest": "LAX",
        "distance": 2475.0,
        "sched_hour": 9,
        "weekday": 2,
        "month": 3,
        "temp": 41.0,
        "dewp": 30.0,
        "humid": 60.5,
        "wind_dir": 270,
        "wind_speed": 12.7,
        "wind_gust": None,
        "precip": 0,
        "pressure": 1012.3,
        "visib": 10,
    }
    assert set(values) == set(spec.feature_names)
    return {"flight_id": "20130301-AA1-JFK-0900", **values}


def parse(schema, body):
    return schema.parse(json.dumps(body).encode())


def rejected(schema, body, raw: bytes | None = None) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        schema.parse(raw if raw is not None else json.dumps(body).encode())
    return info.value


def test_one_row_and_many_rows(schema, spec, row):
    one = parse(schema, row)
    assert len(one.rows) == 1 and one.rows[0].entity_id == row["flight_id"] and len(one.request_id) == 32
    assert one.rows[0].values == tuple(row[n] for n in spec.feature_names)
    many = parse(schema, {"rows": [row, {**row, "flight_id": "x2"}], "request_id": "abc"})
    assert many.request_id == "abc" and [r.entity_id for r in many.rows] == [row["flight_id"], "x2"]
    assert parse(schema, {**row, "request_id": "single-1"}).request_id == "single-1"


def test_unknown_categories_out_of_range_values_and_nullable_nulls_are_accepted(schema, row):
    ok = parse(schema, {**row, "carrier": "NEW", "dest": "ZZZ", "distance": 99999.0, "temp": -500, "humid": None, "sched_hour": 7.0})
    (r,) = ok.rows
    assert r.values[0] == "NEW" and r.values[3] == 99999.0
    assert r.values[4] == 7 and isinstance(r.values[4], int)  # 7.0 for an integer feature is the whole number 7


def test_event_time_is_optional_and_made_naive_local(schema, row):
    assert parse(schema, row).rows[0].event_time is None
    assert parse(schema, {**row, "sched_dep": "2013-03-01T09:00:00"}).rows[0].event_time == datetime(2013, 3, 1, 9, 0)
    # An aware time is converted to the spec's time zone (America/New_York, UTC-5 in March 1st).
    assert parse(schema, {**row, "sched_dep": "2013-03-01T14:00:00+00:00"}).rows[0].event_time == datetime(2013, 3, 1, 9, 0)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"distance": "far"}, "distance", "must be a number, got string"),
        ({"distance": True}, "distance", "must be a number, got boolean"),
        ({"distance": [1]}, "distance", "must be a number, got array"),
        ({"sched_hour": 9.5}, "sched_hour", "must be a whole number"),
        ({"carrier": 1}, "carrier", "must be a string (categorical feature), got number"),
        ({"carrier": None}, "carrier", "must not be null"),
        ({"month": None}, "month", "must not be null"),
        ({"flight_id": 12}, "flight_id", "must be a string (the entity id), got number"),
        ({"flight_id": ""}, "flight_id", "non-empty string"),
        ({"flight_id": "x" * 201}, "flight_id", "at most 200 characters"),
        ({"flight_id": None}, "flight_id", "must not be null"),
        ({"sched_dep": "tomorrow"}, "sched_dep", "ISO 8601"),
        ({"sched_dep": 1362128400}, "sched_dep", "ISO 8601 date-time string, got number"),
        ({"colour": "red"}, "colour", "unknown field"),
    ],
)
def test_each_kind_of_bad_value_names_the_field_and_the_reason(schema, row, change, field, reason):
    err = rejected(schema, {**row, **change})
    assert err.status == 422
    assert [(e.row, e.field) for e in err.errors] == [(0, field)]
    assert reason in err.errors[0].reason
    assert reason in err.body()["detail"] and field in err.body()["detail"]


@pytest.mark.parametrize("name", ["temp", "carrier", "flight_id"])
def test_missing_fields(schema, row, name):
    err = rejected(schema, {k: v for k, v in row.items() if k != name})
    assert (err.errors[0].field, err.status) == (name, 422) and "missing" in err.errors[0].reason


def test_non_finite_numbers_are_rejected(schema, row):
    raw = json.dumps({**row, "temp": 1.0}).replace('"temp": 1.0', '"temp": NaN').encode()
    err = rejected(schema, None, raw)
    assert err.errors[0].field == "temp" and "finite" in err.errors[0].reason


def test_every_error_of_every_row_is_reported_with_its_row_index(schema, row):
    err = rejected(schema, {"rows": [row, {**row, "distance": "x", "origin": 3}, "not a row", {**row, "flight_id": 5}]})
    assert [(e.row, e.field) for e in err.errors] == [(1, "origin"), (1, "distance"), (2, None), (3, "flight_id")]
    assert err.entity_ids == [row["flight_id"], row["flight_id"], None, None]
    assert "row 1" in err.summary() and "and 3 more" in err.summary()
    assert err.error_for_row(0).startswith("not scored")
    assert "distance: must be a number" in err.error_for_row(1)


@pytest.mark.parametrize(
    ("body", "status", "field", "reason"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b"\xff\xfe", 400, None, "not valid JSON"),
        (b"[1, 2]", 422, None, "must be a JSON object"),
        (b'"text"', 422, None, "got string"),
        (b'{"rows": {}}', 422, "rows", "must be an array"),
        (b'{"rows": []}', 422, "rows", "must not be empty"),
        (b'{"rows": [{}], "extra": 1}', 422, "extra", "unknown top-level field"),
        (b'{"rows": [{}], "request_id": 7}', 422, "request_id", "non-empty string"),
    ],
)
def test_bad_bodies(schema, body, status, field, reason):
    err = rejected(schema, None, body)
    assert err.status == status and err.errors[0].field == field and reason in err.errors[0].reason


def test_too_many_rows_is_413(schema, row):
    err = rejected(schema, {"rows": [row] * 6})
    assert err.status == 413 and "limit is 5" in err.summary()
    assert len(parse(schema, {"rows": [row] * 5}).rows) == 5


def test_features_dict_names_the_values(schema, spec, row):
    (r,) = parse(schema, row).rows
    assert schema.features_dict(r) == {n: row[n] for n in spec.feature_names}
