"""Request validation for ``POST /predict``, built from the spec.

A body is one row (a JSON object) or ``{"rows": [...], "request_id": "..."}``. A row carries the
spec's entity id (a string), every feature, and optionally the spec's time column (an ISO 8601
date-time). Checked here: required fields are present, numbers are numbers (finite, integral for
``integer`` features), categoricals are strings, nulls only where the feature is ``nullable``, no
unknown fields. Deliberately *not* checked: unknown categories and out-of-range values; the model
may legitimately see them in production and monitoring tracks them.

Every problem becomes a :class:`FieldError` naming the row index, the field and the reason, and the
request is rejected with a 4xx (:class:`RequestRejected`), never a 500.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    from include.mlops.domain.spec import Spec

#: Longest entity id / request id the inference log stores (its column sizes).
MAX_ENTITY_ID_CHARS = 200
MAX_REQUEST_ID_CHARS = 64
#: At most this many errors are listed in one response (the count is always complete).
MAX_LISTED_ERRORS = 50

_NUMERIC, _INTEGER, _CATEGORICAL = 0, 1, 2
_KINDS = {"numeric": _NUMERIC, "integer": _INTEGER, "categorical": _CATEGORICAL}


@dataclass(frozen=True)
class FieldError:
    """One problem with a request: which row (None: the body as a whole), which field, why."""

    row: int | None
    field: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "reason": self.reason}


class RequestRejected(Exception):
    """A request that cannot be scored: the HTTP status (400, 413, 422) and every problem found."""

    def __init__(self, status: int, errors: list[FieldError], entity_ids: list[str | None] | None = None, request_id: str | None = None):
        self.status = status
        self.errors = errors
        #: Entity id of each row where it could be read (for the inference log), else [None].
        self.entity_ids = entity_ids or [None]
        self.request_id = request_id
        super().__init__(self.summary())

    def summary(self) -> str:
        first = self.errors[0] if self.errors else FieldError(None, None, "invalid request")
        where = " ".join(
            p for p in (f"row {first.row}" if first.row is not None else "", f"field {first.field!r}" if first.field else "") if p
        )
        more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"{where + ': ' if where else ''}{first.reason}{more}"

    def body(self) -> dict[str, Any]:
        return {
            "detail": self.summary(),
            "error_count": len(self.errors),
            "errors": [e.as_dict() for e in self.errors[:MAX_LISTED_ERRORS]],
            "request_id": self.request_id,
        }

    def error_for_row(self, index: int) -> str:
        """The reasons recorded against one row (for its inference-log record)."""
        mine = [f"{e.field}: {e.reason}" if e.field else e.reason for e in self.errors if e.row == index]
        if mine:
            return "; ".join(mine)[:2000]
        return f"not scored: {self.summary()}"[:2000]


class Row:
    """One validated row: the entity id, the event time (naive, the spec's time zone) and the feature values in spec order."""

    __slots__ = ("entity_id", "event_time", "values")

    def __init__(self, entity_id: str, event_time: datetime | None, values: tuple[Any, ...]):
        self.entity_id = entity_id
        self.event_time = event_time
        self.values = values


@dataclass
class ParsedRequest:
    request_id: str
    rows: list[Row] = field(default_factory=list)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class RequestSchema:
    """Validator for ``/predict`` bodies, compiled once from the spec."""

    def __init__(self, spec: Spec, max_rows: int = 1000):
        self.entity_id = spec.entity_id
        self.time_column = spec.time_column
        self.feature_names = tuple(spec.feature_names)
        self.max_rows = max_rows
        self._features = tuple((f.name, _KINDS[f.type], f.nullable) for f in spec.features)
        self._allowed = frozenset({self.entity_id, self.time_column, *self.feature_names})
        self._tz = ZoneInfo(spec.timezone)
        self._row_fields = len(self._features) + 1
        #: ``request_id`` is a top-level key unless the spec uses that name itself.
        self._request_id_key = "request_id" if "request_id" not in self._allowed else None

    # -- the body -----------------------------------------------------------------------------
    def parse(self, body: bytes) -> ParsedRequest:
        """Parse and validate a request body; raises :class:`RequestRejected`."""
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestRejected(400, [FieldError(None, None, f"body is not valid JSON: {exc}")]) from None
        if not isinstance(doc, dict):
            raise RequestRejected(
                422, [FieldError(None, None, f'body must be a JSON object (one row, or {{"rows": [...]}}), got {_type_name(doc)}')]
            )
        request_id = self._request_id(doc)
        if "rows" in doc and "rows" not in self._allowed:
            raw_rows = doc["rows"]
            extra = sorted(k for k in doc if k not in ("rows", self._request_id_key))
            if extra:
                raise RequestRejected(
                    422,
                    [FieldError(None, k, "unknown top-level field (expected only 'rows' and 'request_id')") for k in extra],
                    request_id=request_id,
                )
            if not isinstance(raw_rows, list):
                raise RequestRejected(
                    422, [FieldError(None, "rows", f"must be an array of row objects, got {_type_name(raw_rows)}")], request_id=request_id
                )
            if not raw_rows:
                raise RequestRejected(422, [FieldError(None, "rows", "must not be empty")], request_id=request_id)
            if len(raw_rows) > self.max_rows:
                raise RequestRejected(
                    413,
                    [
                        FieldError(
                            None, "rows", f"{len(raw_rows)} rows in one request; the limit is {self.max_rows} (MLOPS_SERVING_MAX_ROWS)"
                        )
                    ],
                    request_id=request_id,
                )
        else:
            if self._request_id_key in doc:
                doc = {k: v for k, v in doc.items() if k != self._request_id_key}
            raw_rows = [doc]
        return ParsedRequest(request_id, self.rows(raw_rows, request_id))

    def _request_id(self, doc: dict[str, Any]) -> str:
        value = doc.get(self._request_id_key) if self._request_id_key else None
        if value is None:
            return uuid.uuid4().hex
        if not isinstance(value, str) or not value or len(value) > MAX_REQUEST_ID_CHARS:
            raise RequestRejected(
                422, [FieldError(None, "request_id", f"must be a non-empty string of at most {MAX_REQUEST_ID_CHARS} characters")]
            )
        return value

    # -- rows ---------------------------------------------------------------------------------
    def rows(self, raw_rows: list[Any], request_id: str | None = None) -> list[Row]:
        """Validate a list of row objects; every error of every row is collected before rejecting."""
        errors: list[FieldError] = []
        out: list[Row] = []
        for i, raw in enumerate(raw_rows):
            row = self._row(i, raw, errors)
            if row is not None:
                out.append(row)
        if errors:
            ids: list[str | None] = []
            for raw in raw_rows:
                eid = raw.get(self.entity_id) if isinstance(raw, dict) else None
                ids.append(eid[:MAX_ENTITY_ID_CHARS] if isinstance(eid, str) else None)
            raise RequestRejected(422, errors, ids, request_id)
        return out

    def _row(self, i: int, raw: Any, errors: list[FieldError]) -> Row | None:
        if not isinstance(raw, dict):
            errors.append(FieldError(i, None, f"row must be a JSON object, got {_type_name(raw)}"))
            return None
        n_errors = len(errors)
        if len(raw) > self._row_fields + 1 or not self._allowed.issuperset(raw):
            for key in raw:
                if key not in self._allowed:
                    errors.append(FieldError(i, str(key), "unknown field (not the entity id, the time column or a feature of the spec)"))
        entity = raw.get(self.entity_id)
        if entity is None:
            errors.append(
                FieldError(
                    i, self.entity_id, "required field is missing (the entity id)" if self.entity_id not in raw else "must not be null"
                )
            )
        elif not isinstance(entity, str):
            errors.append(FieldError(i, self.entity_id, f"must be a string (the entity id), got {_type_name(entity)}"))
        elif not entity or len(entity) > MAX_ENTITY_ID_CHARS:
            errors.append(FieldError(i, self.entity_id, f"must be a non-empty string of at most {MAX_ENTITY_ID_CHARS} characters"))
        event_time = self._event_time(i, raw.get(self.time_column), errors)
        values: list[Any] = []
        for name, kind, nullable in self._features:
            try:
                v = raw[name]
            except KeyError:
                errors.append(FieldError(i, name, "required feature is missing"))
                continue
            if v is None:
                if not nullable:
                    errors.append(FieldError(i, name, "must not be null (the feature is not nullable)"))
            elif kind == _CATEGORICAL:
                if not isinstance(v, str):
                    errors.append(FieldError(i, name, f"must be a string (categorical feature), got {_type_name(v)}"))
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                errors.append(FieldError(i, name, f"must be a number, got {_type_name(v)}"))
            elif isinstance(v, float) and not math.isfinite(v):
                errors.append(FieldError(i, name, f"must be a finite number, got {v}"))
            elif kind == _INTEGER and isinstance(v, float):
                if not v.is_integer():
                    errors.append(FieldError(i, name, f"must be a whole number (integer feature), got {v}"))
                else:
                    v = int(v)
            values.append(v)
        if len(errors) > n_errors or not isinstance(entity, str):
            return None
        return Row(entity, event_time, tuple(values))

    def _event_time(self, i: int, value: Any, errors: list[FieldError]) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, str):
            errors.append(FieldError(i, self.time_column, f"must be an ISO 8601 date-time string, got {_type_name(value)}"))
            return None
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            errors.append(FieldError(i, self.time_column, f"must be an ISO 8601 date-time string, got {value[:40]!r}"))
            return None
        if ts.tzinfo is not None:  # the spec's time column is naive local time in the spec's time zone
            ts = ts.astimezone(self._tz).replace(tzinfo=None)
        return ts

    def features_dict(self, row: Row) -> dict[str, Any]:
        """The row's features by name (what the inference log stores)."""
        return dict(zip(self.feature_names, row.values, strict=True))
