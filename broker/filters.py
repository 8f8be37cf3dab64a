"""Event-subscription filters: validate an Azure-shaped ``properties.filter`` once, match events cheaply.

``compile_filter(spec)`` does all validation and normalisation (lower-casing, sets, tuples, key
paths) when a subscription is created or updated and raises ``FilterError`` (-> HTTP 400) for
anything Azure would reject. The returned ``EventFilter.matches(envelope)`` runs on the publish path
for every event x subscription, so it only walks pre-built closures.

Semantics follow "Understand event filtering for Event Grid subscriptions"
(https://learn.microsoft.com/azure/event-grid/event-filtering, source
MicrosoftDocs/azure-docs articles/event-grid/event-filtering.md):

* Event types: ``includedEventTypes`` null means all types ("specify All" is also documented).
  Compared case-insensitively against ``eventType`` (EventGridSchema) or ``type`` (CloudEvents).
* Subject: ``subjectBeginsWith`` / ``subjectEndsWith``, case-insensitive unless
  ``isSubjectCaseSensitive`` is true. A missing subject is treated as "".
* Advanced filters: all filters are ANDed; the values of one filter are ORed. The Not* operators
  are the negation of their positive twin, i.e. they fail if the key matches *any* of the values
  (documented pseudo code: ``IF key CONTAINS filter -> FAIL_MATCH``).
* "All string comparisons aren't case-sensitive."
* "Any key values with data types that don't match the filter's data type are ignored": an ignored
  value can never satisfy a positive operator and can never fail a Not* operator.
  String operators compare numbers/booleans by their text: the CloudEvents section's example
  filters the numeric extension ``comexampleothervalue: 5`` with ``StringBeginsWith ["5", "1"]``.
* Missing key (we treat a JSON null like a missing key): "not matched" for NumberGreaterThan,
  NumberGreaterThanOrEquals, NumberLessThan, NumberLessThanOrEquals, NumberIn, BoolEquals,
  StringContains, StringNotContains, StringBeginsWith, StringNotBeginsWith, StringEndsWith,
  StringNotEndsWith, StringIn; "matched" for NumberNotIn, StringNotIn. NumberInRange and
  NumberNotInRange are not listed; they arrived in the same API version (2020-10-15-preview) as the
  newer StringNot* operators, so we give them the same "not matched" behaviour (an inference).
* IsNullOrUndefined is true when the key is missing or null; IsNotNull is its negation.
* Arrays: only evaluated when ``enableAdvancedFilteringOnArrays`` is true; then every element is
  checked (positive operators match if any element matches; Not* operators fail if any element
  matches). With the flag off, "if an incoming event has an array value for the advanced filter's
  key, the matching operation fails" (Event Grid on IoT Edge, articles/event-grid/edge/
  advanced-filtering.md) -- for every operator except the null checks, which only test presence.
  Arrays of objects are not supported by Azure; object elements are ignored like any type mismatch.
* Keys: ``ID``, ``Topic``, ``Subject``, ``EventType``, ``DataVersion``, ``data.a.b`` for
  EventGridSchema; ``id``, ``source``, ``type``, ``specversion``, extension attributes and
  ``data.a.b`` for CloudEvents. The docs spell keys in mixed case (``ID``, ``Data.Key1``), so each
  key segment is looked up exactly first and then case-insensitively. Dots always separate
  segments: "Keys with . (dot) character in them" are a documented limitation (no escaping).

Documented limits (event-filtering.md, "Limitations"):
* 25 advanced filters and 25 filter values across all the filters per Event Grid subscription
  (a NumberInRange range counts as one value; IsNullOrUndefined/IsNotNull carry none);
* 512 characters per string value.
* Key nesting depth: the 2018 preview doc said "The key can only have two levels of nesting (like
  data.key1.key2)"; that limit was dropped at GA and the current page documents no depth limit (the
  Edge page shows ``Data.Prop1.Prop2.Prop3.Prop4.Prop5``), so no depth limit is enforced here.

Numbers: Azure uses .NET ``decimal``; we compare Python int/float as parsed from JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "FilterError",
    "EventFilter",
    "compile_filter",
    "OPERATOR_TYPES",
    "MAX_ADVANCED_FILTERS",
    "MAX_FILTER_VALUES",
    "MAX_STRING_VALUE_LENGTH",
]

# Limits from https://learn.microsoft.com/azure/event-grid/event-filtering#limitations
MAX_ADVANCED_FILTERS = 25  # "25 advanced filters ... per Event Grid subscription"
MAX_FILTER_VALUES = 25  # "... and 25 filter values across all the filters per Event Grid subscription"
MAX_STRING_VALUE_LENGTH = 512  # "512 characters per string value"


class FilterError(ValueError):
    """Invalid filter: raised when a subscription is created/updated -> HTTP 400."""

    def __init__(self, message: str, code: str = "InvalidFilter"):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


_MISSING: Any = object()  # key absent (or JSON null) in the event
_SKIP: Any = object()  # element whose type does not fit the operator: ignored

Predicate = Callable[[Any], bool]
Condition = Callable[[dict], bool]


# --------------------------------------------------------------------------------------------------
# Operator table
# --------------------------------------------------------------------------------------------------

_NUMBER, _BOOL, _STRING, _PRESENCE = "number", "bool", "string", "presence"
_SINGLE, _MULTI, _RANGES, _NONE = "value", "values", "ranges", "none"


class _Op:
    __slots__ = ("name", "kind", "operand", "negated", "missing_result", "build")

    def __init__(
        self,
        name: str,
        kind: str,
        operand: str,
        build: Callable[[Any], Predicate] | None,
        *,
        negated: bool = False,
        missing_result: bool = False,
    ):
        self.name = name
        self.kind = kind  # which event value types the operator looks at
        self.operand = operand  # shape of the filter's value(s)
        self.build = build  # normalised operand -> predicate over one coerced event value
        self.negated = negated
        self.missing_result = missing_result


def _in(values: frozenset) -> Predicate:
    return values.__contains__


def _contains(values: tuple[str, ...]) -> Predicate:
    if len(values) == 1:
        (needle,) = values
        return lambda s: needle in s
    return lambda s: any(v in s for v in values)


def _begins(values: tuple[str, ...]) -> Predicate:
    return lambda s: s.startswith(values)


def _ends(values: tuple[str, ...]) -> Predicate:
    return lambda s: s.endswith(values)


def _in_ranges(ranges: tuple[tuple[float, float], ...]) -> Predicate:
    if len(ranges) == 1:
        ((low, high),) = ranges
        return lambda x: low <= x <= high
    return lambda x: any(low <= x <= high for low, high in ranges)


_OPS: dict[str, _Op] = {
    op.name: op
    for op in (
        _Op("NumberIn", _NUMBER, _MULTI, _in),
        _Op("NumberNotIn", _NUMBER, _MULTI, _in, negated=True, missing_result=True),
        _Op("NumberLessThan", _NUMBER, _SINGLE, lambda v: lambda x: x < v),
        _Op("NumberGreaterThan", _NUMBER, _SINGLE, lambda v: lambda x: x > v),
        _Op("NumberLessThanOrEquals", _NUMBER, _SINGLE, lambda v: lambda x: x <= v),
        _Op("NumberGreaterThanOrEquals", _NUMBER, _SINGLE, lambda v: lambda x: x >= v),
        _Op("NumberInRange", _NUMBER, _RANGES, _in_ranges),
        _Op("NumberNotInRange", _NUMBER, _RANGES, _in_ranges, negated=True),
        _Op("BoolEquals", _BOOL, _SINGLE, lambda v: (lambda x: x is True) if v else (lambda x: x is False)),
        _Op("StringContains", _STRING, _MULTI, _contains),
        _Op("StringNotContains", _STRING, _MULTI, _contains, negated=True),
        _Op("StringBeginsWith", _STRING, _MULTI, _begins),
        _Op("StringNotBeginsWith", _STRING, _MULTI, _begins, negated=True),
        _Op("StringEndsWith", _STRING, _MULTI, _ends),
        _Op("StringNotEndsWith", _STRING, _MULTI, _ends, negated=True),
        _Op("StringIn", _STRING, _MULTI, _in),
        _Op("StringNotIn", _STRING, _MULTI, _in, negated=True, missing_result=True),
        _Op("IsNullOrUndefined", _PRESENCE, _NONE, None),
        _Op("IsNotNull", _PRESENCE, _NONE, None),
    )
}

#: Every operatorType Azure accepts (canonical spelling).
OPERATOR_TYPES: frozenset[str] = frozenset(_OPS)
_OPS_BY_LOWER = {name.lower(): op for name, op in _OPS.items()}


# --------------------------------------------------------------------------------------------------
# Event value coercion (per operator kind) and key lookup
# --------------------------------------------------------------------------------------------------


def _as_number(x: Any) -> Any:
    t = type(x)
    return x if t is int or t is float else _SKIP  # bool is excluded: type(True) is bool


def _as_bool(x: Any) -> Any:
    return x if type(x) is bool else _SKIP


def _as_string(x: Any) -> Any:
    t = type(x)
    if t is str:
        return x.lower()
    if t is bool:
        return "true" if x else "false"
    if t is int or t is float:
        return str(x).lower()
    return _SKIP


_COERCE = {_NUMBER: _as_number, _BOOL: _as_bool, _STRING: _as_string}


def _parse_key(key: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(key, str) or not key.strip():
        raise FilterError(f"{where}: 'key' is required and must be a non-empty string.")
    segments = key.split(".")
    if any(not s for s in segments):
        raise FilterError(f"{where}: key '{key}' has an empty segment; use '.' only between property names.")
    return tuple((s, s.lower()) for s in segments)


def _make_lookup(path: tuple[tuple[str, str], ...]) -> Callable[[dict], Any]:
    def lookup(envelope: dict) -> Any:
        cur: Any = envelope
        for seg, low in path:
            if not isinstance(cur, dict):
                return _MISSING
            try:
                cur = cur[seg]
            except KeyError:
                for k, v in cur.items():
                    if type(k) is str and k.lower() == low:
                        cur = v
                        break
                else:
                    return _MISSING
        return _MISSING if cur is None else cur

    return lookup


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return type(x) in (int, float) and (type(x) is int or math.isfinite(x))


def _check_string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise FilterError(f"{where}: string values are required, got {type(value).__name__}.")
    if len(value) > MAX_STRING_VALUE_LENGTH:
        raise FilterError(
            f"{where}: string value is {len(value)} characters; the maximum is {MAX_STRING_VALUE_LENGTH}."
        )
    return value


def _normalise_operand(op: _Op, raw: dict, where: str) -> tuple[Any, int]:
    """Return (normalised operand, number of filter values it counts for)."""
    if op.operand == _NONE:
        return None, 0

    if op.operand == _SINGLE:
        if "value" not in raw or raw["value"] is None:
            raise FilterError(f"{where}: operator {op.name} requires a 'value'.")
        value = raw["value"]
        if op.kind == _NUMBER:
            if not _is_number(value):
                raise FilterError(f"{where}: operator {op.name} requires a numeric 'value'.")
        elif op.kind == _BOOL:
            if type(value) is not bool:
                raise FilterError(f"{where}: operator {op.name} requires a boolean 'value'.")
        return value, 1

    if "values" not in raw or raw["values"] is None:
        raise FilterError(f"{where}: operator {op.name} requires 'values' (a non-empty array).")
    values = raw["values"]
    if not isinstance(values, list) or not values:
        raise FilterError(f"{where}: operator {op.name} requires 'values' to be a non-empty array.")

    if op.operand == _RANGES:
        ranges = []
        for pair in values:
            if not (isinstance(pair, list) and len(pair) == 2 and _is_number(pair[0]) and _is_number(pair[1])):
                raise FilterError(f"{where}: operator {op.name} requires 'values' to be [low, high] number pairs.")
            if pair[0] > pair[1]:
                raise FilterError(f"{where}: range {pair} has low greater than high.")
            ranges.append((pair[0], pair[1]))
        return tuple(ranges), len(ranges)

    if op.kind == _NUMBER:
        for v in values:
            if not _is_number(v):
                raise FilterError(f"{where}: operator {op.name} requires numeric 'values'.")
        return frozenset(values), len(values)

    lowered = tuple(_check_string(v, where).lower() for v in values)
    if op.build is _in:
        return frozenset(lowered), len(values)
    return lowered, len(values)


# --------------------------------------------------------------------------------------------------
# Condition compilation
# --------------------------------------------------------------------------------------------------


def _compile_advanced(op: _Op, lookup: Callable[[dict], Any], operand: Any, on_arrays: bool) -> Condition:
    if op.kind == _PRESENCE:
        if op.name == "IsNullOrUndefined":
            return lambda env: lookup(env) is _MISSING
        return lambda env: lookup(env) is not _MISSING

    pred = op.build(operand)  # type: ignore[misc]
    coerce = _COERCE[op.kind]
    hit = not op.negated  # result when some event value satisfies the predicate
    miss = op.negated  # result when none does (all values ignored or not satisfying)
    missing = op.missing_result

    def condition(env: dict) -> bool:
        value = lookup(env)
        if value is _MISSING:
            return missing
        if type(value) is list:
            if not on_arrays:
                return False
            for item in value:
                item = coerce(item)
                if item is not _SKIP and pred(item):
                    return hit
            return miss
        value = coerce(value)
        if value is not _SKIP and pred(value):
            return hit
        return miss

    return condition


def _optional(spec: dict, name: str, typ: type, type_name: str) -> Any:
    value = spec.get(name)
    if value is not None and type(value) is not typ:
        raise FilterError(f"filter.{name} must be {type_name}.")
    return value


class EventFilter:
    """A compiled subscription filter. Build with `compile_filter`."""

    __slots__ = ("_match_all", "_event_types", "_subject_begins", "_subject_ends", "_case_sensitive", "_conditions")

    def __init__(
        self,
        event_types: frozenset[str] | None = None,
        subject_begins: str | None = None,
        subject_ends: str | None = None,
        case_sensitive: bool = False,
        conditions: tuple[Condition, ...] = (),
    ):
        self._event_types = event_types
        self._subject_begins = subject_begins
        self._subject_ends = subject_ends
        self._case_sensitive = case_sensitive
        self._conditions = conditions
        self._match_all = event_types is None and not subject_begins and not subject_ends and not conditions

    @property
    def matches_everything(self) -> bool:
        return self._match_all

    def matches(self, envelope: dict) -> bool:
        if self._match_all:
            return True
        if self._event_types is not None:
            event_type = envelope.get("eventType")
            if event_type is None:
                event_type = envelope.get("type")
            if not isinstance(event_type, str) or event_type.lower() not in self._event_types:
                return False
        if self._subject_begins or self._subject_ends:
            subject = envelope.get("subject")
            if not isinstance(subject, str):
                subject = ""
            if not self._case_sensitive:
                subject = subject.lower()
            if self._subject_begins and not subject.startswith(self._subject_begins):
                return False
            if self._subject_ends and not subject.endswith(self._subject_ends):
                return False
        for condition in self._conditions:
            if not condition(envelope):
                return False
        return True


_MATCH_ALL = EventFilter()


def compile_filter(spec: dict | None) -> EventFilter:
    """Validate an Azure-shaped subscription filter (``properties.filter``) and return a matcher.

    None or {} matches everything. Raises FilterError for unknown operatorType, wrong value types,
    missing key/value(s), NumberInRange pairs that are not [low, high], and Azure's documented limits.
    """
    if spec is None:
        return _MATCH_ALL
    if not isinstance(spec, dict):
        raise FilterError("filter must be a JSON object.")
    if not spec:
        return _MATCH_ALL

    # includedEventTypes: null = all; the docs also allow "All".
    event_types: frozenset[str] | None = None
    raw_types = spec.get("includedEventTypes")
    if raw_types is not None:
        if not isinstance(raw_types, list) or not all(isinstance(t, str) for t in raw_types):
            raise FilterError("filter.includedEventTypes must be an array of strings or null.")
        lowered = frozenset(t.lower() for t in raw_types)
        # An empty list is treated like null (all types) rather than a subscription that gets nothing.
        if lowered and "all" not in lowered:
            event_types = lowered

    begins = _optional(spec, "subjectBeginsWith", str, "a string")
    ends = _optional(spec, "subjectEndsWith", str, "a string")
    case_sensitive = bool(_optional(spec, "isSubjectCaseSensitive", bool, "a boolean"))
    on_arrays = bool(_optional(spec, "enableAdvancedFilteringOnArrays", bool, "a boolean"))
    if not case_sensitive:
        begins = begins.lower() if begins else begins
        ends = ends.lower() if ends else ends

    raw_filters = spec.get("advancedFilters")
    if raw_filters is None:
        raw_filters = []
    if not isinstance(raw_filters, list):
        raise FilterError("filter.advancedFilters must be an array.")
    if len(raw_filters) > MAX_ADVANCED_FILTERS:
        raise FilterError(
            f"filter.advancedFilters has {len(raw_filters)} filters; the maximum is {MAX_ADVANCED_FILTERS}."
        )

    conditions: list[Condition] = []
    total_values = 0
    for index, raw in enumerate(raw_filters):
        where = f"filter.advancedFilters[{index}]"
        if not isinstance(raw, dict):
            raise FilterError(f"{where} must be a JSON object.")
        op_name = raw.get("operatorType")
        op = _OPS_BY_LOWER.get(op_name.lower()) if isinstance(op_name, str) else None
        if op is None:
            raise FilterError(
                f"{where}: unknown operatorType {op_name!r}; expected one of {', '.join(sorted(OPERATOR_TYPES))}."
            )
        path = _parse_key(raw.get("key"), where)
        operand, count = _normalise_operand(op, raw, where)
        total_values += count
        if total_values > MAX_FILTER_VALUES:
            raise FilterError(
                f"filter.advancedFilters has more than {MAX_FILTER_VALUES} values across all filters."
            )
        conditions.append(_compile_advanced(op, _make_lookup(path), operand, on_arrays))

    result = EventFilter(event_types, begins or None, ends or None, case_sensitive, tuple(conditions))
    return _MATCH_ALL if result.matches_everything else result
