"""Request validation for ``POST /predict``, built from the spec.

A body is one row (a JSON object) or ``{"rows": [...], "request_id": "..."}``. A row carries the
spec's entity id (a string), every feature, and optionally the spec's time column (an ISO 8601
date-time). Checked here: required fields are present, numbers are numbers (finite, integral for
``integer`` features) that the model's dtype holds (int64 for ``integer`` features, float64 for
``numeric`` ones), categoricals are strings, nulls only where the feature is ``nullable``, no
unknown fields. Every string (ids, categories, the time) is at most a fixed length and holds no
control character (NUL included) and no lone surrogate: the inference log must be able to store it.
Deliberately *not* checked: unknown categories and out-of-range values; the model may legitimately
see them in production and monitoring tracks them.

Every problem becomes a :class:`FieldError` naming the row index, the field and the reason, and the
request is rejected with a 4xx (:class:`RequestRejected`), never a 500.
"""

from __future__ import annotations

import json
import math
import re
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
#: Longest categorical value and time string accepted.
MAX_CATEGORY_CHARS = 200
MAX_TIME_CHARS = 64
#: Event times the inference log's readers can hold (pandas' nanosecond timestamps: 1677-09-21 .. 2262-04-11).
MIN_EVENT_YEAR, MAX_EVENT_YEAR = 1678, 2261
#: What the model's input columns hold: int64 for integer features, float64 for numeric ones.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT64_MAX = 1.7976931348623157e308
#: Control characters (C0, DEL, C1; NUL included) and UTF-16 surrogates (lone ones come from "\ud800" escapes).
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
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


def bad_string(value: str, limit: int) -> str | None:
    """Why ``value`` cannot be stored as an id or category (None: it can)."""
    if not value or len(value) > limit:
        return f"must be a non-empty string of at most {limit} characters"
    bad = _BAD_CHARS.search(value)
    if bad is not None:
        return f"must not contain control characters or lone surrogates (found U+{ord(bad.group()):04X} at {bad.start()})"
    return None


def may_hold_bad_chars(body: bytes) -> bool:
    """False when no string of this JSON body can hold a control character or a surrogate: JSON
    forbids raw C0 controls in strings, so they come from a ``\\u`` escape; DEL and the C1 controls
    may come raw (``0x7f``, UTF-8 ``0xc2 0x80-0x9f``), and ``json.loads`` decodes a raw UTF-8
    surrogate (``0xed 0xa0-0xbf ..``) with ``surrogatepass``; a UTF-16/32 body has NUL bytes. A few
    byte scans of the body spare a regex per string on the hot path."""
    return b"\\u" in body or b"\x7f" in body or b"\xc2" in body or b"\xed" in body or b"\x00" in body


def clean(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters with every control character and surrogate replaced by U+FFFD."""
    return _BAD_CHARS.sub("\ufffd", value[:limit])


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


def _digits(value: int) -> str:
    """A huge integer for a message: its first digits and its length (never thousands of digits)."""
    text = str(value) if abs(value) < 10**40 else f"{str(value)[:12]}... ({len(str(abs(value)))} digits)"
    return text


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
            raise RequestRejected(400, [FieldError(None, None, f"body is not valid JSON: {str(exc)[:200]}")]) from None
        except RecursionError:
            raise RequestRejected(400, [FieldError(None, None, "body is not valid JSON: nested too deeply")]) from None
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
                    [FieldError(None, clean(k, 100), "unknown top-level field (expected only 'rows' and 'request_id')") for k in extra],
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
        return ParsedRequest(request_id, self.rows(raw_rows, request_id, check_chars=may_hold_bad_chars(body)))

    def _request_id(self, doc: dict[str, Any]) -> str:
        value = doc.get(self._request_id_key) if self._request_id_key else None
        if value is None:
            return uuid.uuid4().hex
        why = bad_string(value, MAX_REQUEST_ID_CHARS) if isinstance(value, str) else "must be a string"
        if why is not None:
            limit = f"a non-empty string of at most {MAX_REQUEST_ID_CHARS} characters"
            raise RequestRejected(422, [FieldError(None, "request_id", f"{why} ({limit}, no control characters)")])
        return value

    # -- rows ---------------------------------------------------------------------------------
    def rows(self, raw_rows: list[Any], request_id: str | None = None, *, check_chars: bool = True) -> list[Row]:
        """Validate a list of row objects; every error of every row is collected before rejecting."""
        errors: list[FieldError] = []
        out: list[Row] = []
        for i, raw in enumerate(raw_rows):
            row = self._row(i, raw, errors, check_chars)
            if row is not None:
                out.append(row)
        if errors:
            ids: list[str | None] = []
            for raw in raw_rows:
                eid = raw.get(self.entity_id) if isinstance(raw, dict) else None
                ids.append(clean(eid, MAX_ENTITY_ID_CHARS) if isinstance(eid, str) and eid else None)
            raise RequestRejected(422, errors, ids, request_id)
        return out

    def _row(self, i: int, raw: Any, errors: list[FieldError], check_chars: bool = True) -> Row | None:
        if not isinstance(raw, dict):
            errors.append(FieldError(i, None, f"row must be a JSON object, got {_type_name(raw)}"))
            return None
        n_errors = len(errors)
        if len(raw) > self._row_fields + 1 or not self._allowed.issuperset(raw):
            for key in raw:
                if key not in self._allowed:
                    errors.append(
                        FieldError(i, clean(key, 100), "unknown field (not the entity id, the time column or a feature of the spec)")
                    )
        entity = raw.get(self.entity_id)
        if entity is None:
            errors.append(
                FieldError(
                    i, self.entity_id, "required field is missing (the entity id)" if self.entity_id not in raw else "must not be null"
                )
            )
        elif not isinstance(entity, str):
            errors.append(FieldError(i, self.entity_id, f"must be a string (the entity id), got {_type_name(entity)}"))
        else:
            why = bad_string(entity, MAX_ENTITY_ID_CHARS) if check_chars or not entity or len(entity) > MAX_ENTITY_ID_CHARS else None
            if why is not None:
                errors.append(FieldError(i, self.entity_id, why))
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
                elif len(v) > MAX_CATEGORY_CHARS or (check_chars and _BAD_CHARS.search(v) is not None):
                    errors.append(FieldError(i, name, bad_string(v, MAX_CATEGORY_CHARS) or "invalid string"))
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                errors.append(FieldError(i, name, f"must be a number, got {_type_name(v)}"))
            elif isinstance(v, float):
                if not math.isfinite(v):
                    errors.append(FieldError(i, name, f"must be a finite number, got {v}"))
                elif kind == _INTEGER:
                    if not v.is_integer():
                        errors.append(FieldError(i, name, f"must be a whole number (integer feature), got {v}"))
                    elif not INT64_MIN <= v < 2.0**63:
                        errors.append(FieldError(i, name, f"must fit a 64-bit integer (integer feature), got {v:.6g}"))
                    else:
                        v = int(v)
            elif kind == _INTEGER:
                if not INT64_MIN <= v <= INT64_MAX:
                    errors.append(FieldError(i, name, f"must fit a 64-bit integer (integer feature), got {_digits(v)}"))
            elif not -FLOAT64_MAX <= v <= FLOAT64_MAX:
                errors.append(FieldError(i, name, f"must fit a 64-bit float (numeric feature), got {_digits(v)}"))
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
            if len(value) > MAX_TIME_CHARS:
                raise ValueError("too long")
            ts = datetime.fromisoformat(value)
        except ValueError:
            errors.append(FieldError(i, self.time_column, f"must be an ISO 8601 date-time string, got {value[:40]!r}"))
            return None
        if ts.tzinfo is not None:  # the spec's time column is naive local time in the spec's time zone
            try:
                ts = ts.astimezone(self._tz).replace(tzinfo=None)
            except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00+14:00: before year 1 in the spec's zone
                errors.append(FieldError(i, self.time_column, f"is outside the dates the spec's time zone can represent: {value[:40]!r}"))
                return None
        if not MIN_EVENT_YEAR <= ts.year <= MAX_EVENT_YEAR:  # monitoring reads the log with pandas (nanosecond timestamps)
            errors.append(FieldError(i, self.time_column, f"must be a date between the years {MIN_EVENT_YEAR} and {MAX_EVENT_YEAR}"))
            return None
        return ts

    def openapi_body(self) -> dict[str, Any]:
        """The ``/predict`` request body as OpenAPI 3.1 (JSON Schema): what ``/openapi.json`` shows and
        the fuzz suite generates from. What JSON Schema cannot say (no lone surrogates, event times
        the log can hold) is still checked by :meth:`parse`."""
        text = {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"}
        json_type = {_NUMERIC: "number", _INTEGER: "integer", _CATEGORICAL: "string"}
        props: dict[str, Any] = {self.entity_id: {**text, "minLength": 1, "maxLength": MAX_ENTITY_ID_CHARS}}
        props[self.time_column] = {"type": ["string", "null"], "format": "date-time", "maxLength": MAX_TIME_CHARS}
        for name, kind, nullable in self._features:
            one: dict[str, Any] = {"type": [json_type[kind], "null"] if nullable else json_type[kind]}
            if kind == _CATEGORICAL:
                one.update(pattern=text["pattern"], maxLength=MAX_CATEGORY_CHARS)
            elif kind == _INTEGER:
                one.update(minimum=INT64_MIN, maximum=INT64_MAX)
            props[name] = one
        row = {"type": "object", "properties": props, "required": [self.entity_id, *self.feature_names], "additionalProperties": False}
        request_id = {**text, "minLength": 1, "maxLength": MAX_REQUEST_ID_CHARS}
        variants = [{**row, "properties": {**props, self._request_id_key: request_id}} if self._request_id_key else row]
        if "rows" not in self._allowed:
            many_props: dict[str, Any] = {"rows": {"type": "array", "items": row, "minItems": 1, "maxItems": self.max_rows}}
            if self._request_id_key:
                many_props[self._request_id_key] = request_id
            variants.append({"type": "object", "properties": many_props, "required": ["rows"], "additionalProperties": False})
        return {"required": True, "content": {"application/json": {"schema": {"anyOf": variants}}}}

    def features_dict(self, row: Row) -> dict[str, Any]:
        """The row's features by name (what the inference log stores)."""
        return dict(zip(self.feature_names, row.values, strict=True))
