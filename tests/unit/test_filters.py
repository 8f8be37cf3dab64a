"""Table-driven tests for broker.filters (Azure Event Grid subscription filter semantics).

Facts under test come from https://learn.microsoft.com/azure/event-grid/event-filtering (operators,
missing-key behaviour, arrays, limits) and the Event Grid on IoT Edge advanced-filtering page
(arrays fail to match when array filtering is off). See the module docstring for the full list.
"""

from __future__ import annotations

import pytest

from broker.filters import (
    MAX_ADVANCED_FILTERS,
    MAX_FILTER_VALUES,
    MAX_STRING_VALUE_LENGTH,
    OPERATOR_TYPES,
    EventFilter,
    FilterError,
    compile_filter,
)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # the key is absent from the event


class Nested:
    """Put the event value at data.a.b and filter on key 'data.a.b' instead of 'data.v'."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return f"Nested({self.value!r})"


def V(x):
    return {"value": x}


def VS(*xs):
    return {"values": list(xs)}


ON, OFF = True, False  # enableAdvancedFilteringOnArrays

# (operatorType, operand, event value, enableAdvancedFilteringOnArrays, expected match)
TRUTH_TABLE = [
    # ---- NumberIn: key equals any value --------------------------------------------------------
    ("NumberIn", VS(5, 1), 5, OFF, True),
    ("NumberIn", VS(5, 1), 1, OFF, True),
    ("NumberIn", VS(5, 1), 5.0, OFF, True),
    ("NumberIn", VS(5, 1), 2, OFF, False),
    ("NumberIn", VS(5, 1), "5", OFF, False),  # type mismatch ignored
    ("NumberIn", VS(1), True, OFF, False),  # a boolean is not a number
    ("NumberIn", VS(5, 1), None, OFF, False),
    ("NumberIn", VS(5, 1), MISSING, OFF, False),
    ("NumberIn", VS(5, 1), [2, 5], ON, True),
    ("NumberIn", VS(5, 1), [2, 5], OFF, False),
    ("NumberIn", VS(5, 1), [2, 3], ON, False),
    ("NumberIn", VS(5, 1), ["5", 5], ON, True),  # mismatched elements ignored, 5 matches
    ("NumberIn", VS(5, 1), Nested(1), OFF, True),
    ("NumberIn", VS(5, 1), Nested(7), OFF, False),
    # ---- NumberNotIn: key equals none of the values (missing key -> matched) -------------------
    ("NumberNotIn", VS(41, 0), 5, OFF, True),
    ("NumberNotIn", VS(41, 0), 41, OFF, False),
    ("NumberNotIn", VS(41, 0), 0, OFF, False),
    ("NumberNotIn", VS(41, 0), "41", OFF, True),  # ignored value cannot fail the match
    ("NumberNotIn", VS(41, 0), MISSING, OFF, True),
    ("NumberNotIn", VS(41, 0), None, OFF, True),
    ("NumberNotIn", VS(41, 0), [1, 2], ON, True),
    ("NumberNotIn", VS(41, 0), [1, 41], ON, False),
    ("NumberNotIn", VS(41, 0), [], ON, True),
    ("NumberNotIn", VS(41, 0), [1, 2], OFF, False),
    ("NumberNotIn", VS(41, 0), Nested(0), OFF, False),
    ("NumberNotIn", VS(41, 0), Nested(3), OFF, True),
    # ---- NumberLessThan ----------------------------------------------------------------------------
    ("NumberLessThan", V(100), 99, OFF, True),
    ("NumberLessThan", V(100), 100, OFF, False),
    ("NumberLessThan", V(100), 100.5, OFF, False),
    ("NumberLessThan", V(100), "1", OFF, False),
    ("NumberLessThan", V(100), False, OFF, False),
    ("NumberLessThan", V(100), MISSING, OFF, False),
    ("NumberLessThan", V(100), None, OFF, False),
    ("NumberLessThan", V(100), [200, 5], ON, True),
    ("NumberLessThan", V(100), [200, 5], OFF, False),
    ("NumberLessThan", V(100), [200], ON, False),
    ("NumberLessThan", V(100), Nested(-1), OFF, True),
    # ---- NumberGreaterThan -------------------------------------------------------------------------
    ("NumberGreaterThan", V(20), 21, OFF, True),
    ("NumberGreaterThan", V(20), 20, OFF, False),
    ("NumberGreaterThan", V(20), "30", OFF, False),
    ("NumberGreaterThan", V(20), MISSING, OFF, False),
    ("NumberGreaterThan", V(20), None, OFF, False),
    ("NumberGreaterThan", V(20), [1, 30], ON, True),
    ("NumberGreaterThan", V(20), [1, 30], OFF, False),
    ("NumberGreaterThan", V(20), Nested(20.5), OFF, True),
    # ---- NumberLessThanOrEquals --------------------------------------------------------------------
    ("NumberLessThanOrEquals", V(100), 100, OFF, True),
    ("NumberLessThanOrEquals", V(100), 100.01, OFF, False),
    ("NumberLessThanOrEquals", V(100), "50", OFF, False),
    ("NumberLessThanOrEquals", V(100), MISSING, OFF, False),
    ("NumberLessThanOrEquals", V(100), [101, 100], ON, True),
    ("NumberLessThanOrEquals", V(100), [101, 100], OFF, False),
    ("NumberLessThanOrEquals", V(100), Nested(3), OFF, True),
    # ---- NumberGreaterThanOrEquals -----------------------------------------------------------------
    ("NumberGreaterThanOrEquals", V(30), 30, OFF, True),
    ("NumberGreaterThanOrEquals", V(30), 29.9, OFF, False),
    ("NumberGreaterThanOrEquals", V(30), True, OFF, False),
    ("NumberGreaterThanOrEquals", V(30), MISSING, OFF, False),
    ("NumberGreaterThanOrEquals", V(30), [1, 30], ON, True),
    ("NumberGreaterThanOrEquals", V(30), [1, 2], ON, False),
    ("NumberGreaterThanOrEquals", V(30), [1, 30], OFF, False),
    ("NumberGreaterThanOrEquals", V(30), Nested(31), OFF, True),
    # ---- NumberInRange: inclusive [low, high], ranges ORed (missing key -> not matched) ------------
    ("NumberInRange", VS([3.14159, 999.95], [3000, 4000]), 3.14159, OFF, True),
    ("NumberInRange", VS([3.14159, 999.95], [3000, 4000]), 999.95, OFF, True),
    ("NumberInRange", VS([3.14159, 999.95], [3000, 4000]), 1000, OFF, False),
    ("NumberInRange", VS([3.14159, 999.95], [3000, 4000]), 3500, OFF, True),
    ("NumberInRange", VS([3.14159, 999.95], [3000, 4000]), 4000, OFF, True),
    ("NumberInRange", VS([3.14159, 999.95], [3000, 4000]), 4000.1, OFF, False),
    ("NumberInRange", VS([3000, 4000]), "3500", OFF, False),
    ("NumberInRange", VS([3000, 4000]), MISSING, OFF, False),
    ("NumberInRange", VS([3000, 4000]), None, OFF, False),
    ("NumberInRange", VS([3000, 4000]), [1, 3500], ON, True),
    ("NumberInRange", VS([3000, 4000]), [1, 3500], OFF, False),
    ("NumberInRange", VS([3000, 4000]), [1, 2], ON, False),
    ("NumberInRange", VS([0, 20]), Nested(10), OFF, True),
    # ---- NumberNotInRange: in none of the ranges --------------------------------------------------
    ("NumberNotInRange", VS([3000, 4000]), 10, OFF, True),
    ("NumberNotInRange", VS([3000, 4000]), 3000, OFF, False),
    ("NumberNotInRange", VS([3000, 4000]), 3500, OFF, False),
    ("NumberNotInRange", VS([1, 2], [3000, 4000]), 1.5, OFF, False),
    ("NumberNotInRange", VS([3000, 4000]), "3500", OFF, True),  # ignored value cannot fail
    ("NumberNotInRange", VS([3000, 4000]), MISSING, OFF, False),
    ("NumberNotInRange", VS([3000, 4000]), [1, 2], ON, True),
    ("NumberNotInRange", VS([3000, 4000]), [1, 3500], ON, False),
    ("NumberNotInRange", VS([3000, 4000]), [], ON, True),
    ("NumberNotInRange", VS([3000, 4000]), [1, 2], OFF, False),
    ("NumberNotInRange", VS([3000, 4000]), Nested(5000), OFF, True),
    # ---- BoolEquals --------------------------------------------------------------------------------
    ("BoolEquals", V(True), True, OFF, True),
    ("BoolEquals", V(True), False, OFF, False),
    ("BoolEquals", V(False), False, OFF, True),
    ("BoolEquals", V(False), True, OFF, False),
    ("BoolEquals", V(True), "true", OFF, False),
    ("BoolEquals", V(True), 1, OFF, False),
    ("BoolEquals", V(False), 0, OFF, False),
    ("BoolEquals", V(False), MISSING, OFF, False),
    ("BoolEquals", V(True), None, OFF, False),
    ("BoolEquals", V(True), [False, True], ON, True),
    ("BoolEquals", V(True), [False], ON, False),
    ("BoolEquals", V(True), [True], OFF, False),
    ("BoolEquals", V(True), Nested(True), OFF, True),
    # ---- StringContains (case-insensitive substring, values ORed) -----------------------------------
    ("StringContains", VS("microsoft", "azure"), "azure data factory", OFF, True),
    ("StringContains", VS("microsoft", "azure"), "AZURE", OFF, True),
    ("StringContains", VS("Microsoft"), "microsoft teams", OFF, True),
    ("StringContains", VS("microsoft", "azure"), "contoso", OFF, False),
    ("StringContains", VS("microsoft", "azure"), MISSING, OFF, False),
    ("StringContains", VS("microsoft", "azure"), None, OFF, False),
    ("StringContains", VS("microsoft", "azure"), {"azure": 1}, OFF, False),  # objects ignored
    ("StringContains", VS("5"), 15, OFF, True),  # numbers compared by their text
    ("StringContains", VS("TRUE"), True, OFF, True),
    ("StringContains", VS("microsoft", "azure"), ["x", "Microsoft Teams"], ON, True),
    ("StringContains", VS("microsoft", "azure"), ["x", "Microsoft Teams"], OFF, False),
    ("StringContains", VS("microsoft", "azure"), ["x", "y"], ON, False),
    ("StringContains", VS("azure"), [{"name": "azure"}], ON, False),  # arrays of objects unsupported
    ("StringContains", VS("microsoft", "azure"), Nested("my azure"), OFF, True),
    # ---- StringNotContains (missing key -> not matched) --------------------------------------------
    ("StringNotContains", VS("contoso", "fabrikam"), "microsoft", OFF, True),
    ("StringNotContains", VS("contoso", "fabrikam"), "Contoso Ltd", OFF, False),
    ("StringNotContains", VS("contoso", "fabrikam"), "FABRIKAM", OFF, False),
    ("StringNotContains", VS("contoso", "fabrikam"), MISSING, OFF, False),
    ("StringNotContains", VS("contoso", "fabrikam"), None, OFF, False),
    ("StringNotContains", VS("contoso", "fabrikam"), 42, OFF, True),
    ("StringNotContains", VS("4"), 42, OFF, False),
    ("StringNotContains", VS("contoso", "fabrikam"), ["a", "b"], ON, True),
    ("StringNotContains", VS("contoso", "fabrikam"), ["a", "my contoso"], ON, False),
    ("StringNotContains", VS("contoso", "fabrikam"), [], ON, True),
    ("StringNotContains", VS("contoso", "fabrikam"), ["a"], OFF, False),
    ("StringNotContains", VS("contoso", "fabrikam"), Nested("x"), OFF, True),
    # ---- StringBeginsWith --------------------------------------------------------------------------
    ("StringBeginsWith", VS("event", "message"), "event hubs", OFF, True),
    ("StringBeginsWith", VS("event", "message"), "Message bus", OFF, True),
    ("StringBeginsWith", VS("event", "message"), "hubs event", OFF, False),
    ("StringBeginsWith", VS("event", "message"), MISSING, OFF, False),
    ("StringBeginsWith", VS("event", "message"), None, OFF, False),
    ("StringBeginsWith", VS("5", "1"), 5, OFF, True),  # the docs' CloudEvents extension example
    ("StringBeginsWith", VS("5", "1"), 25, OFF, False),
    ("StringBeginsWith", VS("event", "message"), ["x", "eventgrid"], ON, True),
    ("StringBeginsWith", VS("event", "message"), ["x", "eventgrid"], OFF, False),
    ("StringBeginsWith", VS("event", "message"), ["x"], ON, False),
    ("StringBeginsWith", VS("event", "message"), Nested("EVENTS"), OFF, True),
    # ---- StringNotBeginsWith (missing key -> not matched) ------------------------------------------
    ("StringNotBeginsWith", VS("event", "message"), "grid", OFF, True),
    ("StringNotBeginsWith", VS("event", "message"), "Event", OFF, False),
    ("StringNotBeginsWith", VS("event", "message"), MISSING, OFF, False),
    ("StringNotBeginsWith", VS("event", "message"), True, OFF, True),
    ("StringNotBeginsWith", VS("event", "message"), ["grid", "hub"], ON, True),
    ("StringNotBeginsWith", VS("event", "message"), ["grid", "message"], ON, False),
    ("StringNotBeginsWith", VS("event", "message"), ["grid"], OFF, False),
    ("StringNotBeginsWith", VS("event", "message"), Nested("messages"), OFF, False),
    # ---- StringEndsWith ----------------------------------------------------------------------------
    ("StringEndsWith", VS("jpg", "jpeg", "png"), "eventgrid.png", OFF, True),
    ("StringEndsWith", VS("jpg", "jpeg", "png"), "PHOTO.JPG", OFF, True),
    ("StringEndsWith", VS("jpg", "jpeg", "png"), "a.gif", OFF, False),
    ("StringEndsWith", VS("jpg", "jpeg", "png"), 1, OFF, False),
    ("StringEndsWith", VS("jpg", "jpeg", "png"), MISSING, OFF, False),
    ("StringEndsWith", VS("jpg", "jpeg", "png"), ["a.gif", "b.png"], ON, True),
    ("StringEndsWith", VS("jpg", "jpeg", "png"), ["a.gif", "b.png"], OFF, False),
    ("StringEndsWith", VS("jpg", "jpeg", "png"), Nested("x.jpeg"), OFF, True),
    # ---- StringNotEndsWith (missing key -> not matched) --------------------------------------------
    ("StringNotEndsWith", VS("jpg", "png"), "a.gif", OFF, True),
    ("StringNotEndsWith", VS("jpg", "png"), "A.PNG", OFF, False),
    ("StringNotEndsWith", VS("jpg", "png"), MISSING, OFF, False),
    ("StringNotEndsWith", VS("jpg", "png"), None, OFF, False),
    ("StringNotEndsWith", VS("jpg", "png"), ["a.gif", "b.txt"], ON, True),
    ("StringNotEndsWith", VS("jpg", "png"), ["a.gif", "b.jpg"], ON, False),
    ("StringNotEndsWith", VS("jpg", "png"), ["a.gif"], OFF, False),
    ("StringNotEndsWith", VS("jpg", "png"), Nested("x"), OFF, True),
    # ---- StringIn (exact, case-insensitive) --------------------------------------------------------
    ("StringIn", VS("contoso", "fabrikam", "factory"), "Contoso", OFF, True),
    ("StringIn", VS("contoso", "fabrikam", "factory"), "contoso ltd", OFF, False),
    ("StringIn", VS("contoso", "fabrikam", "factory"), MISSING, OFF, False),
    ("StringIn", VS("contoso", "fabrikam", "factory"), None, OFF, False),
    ("StringIn", VS("1.5"), 1.5, OFF, True),
    ("StringIn", VS("contoso", "fabrikam", "factory"), ["x", "FACTORY"], ON, True),
    ("StringIn", VS("contoso", "fabrikam", "factory"), ["x", "FACTORY"], OFF, False),
    ("StringIn", VS("contoso", "fabrikam", "factory"), [], ON, False),
    ("StringIn", VS("contoso", "fabrikam", "factory"), Nested("fabrikam"), OFF, True),
    # ---- StringNotIn (missing key -> matched) -------------------------------------------------------
    ("StringNotIn", VS("aws", "bridge"), "azure", OFF, True),
    ("StringNotIn", VS("aws", "bridge"), "AWS", OFF, False),
    ("StringNotIn", VS("aws", "bridge"), MISSING, OFF, True),
    ("StringNotIn", VS("aws", "bridge"), None, OFF, True),
    ("StringNotIn", VS("aws", "bridge"), {"aws": 1}, OFF, True),  # object ignored
    ("StringNotIn", VS("5"), 5, OFF, False),
    ("StringNotIn", VS("aws", "bridge"), ["azure", "gcp"], ON, True),
    ("StringNotIn", VS("aws", "bridge"), ["azure", "bridge"], ON, False),
    ("StringNotIn", VS("aws", "bridge"), ["azure"], OFF, False),
    ("StringNotIn", VS("aws", "bridge"), Nested("bridge"), OFF, False),
    # ---- IsNullOrUndefined / IsNotNull (presence only; arrays are present values) -----------------
    ("IsNullOrUndefined", {}, MISSING, OFF, True),
    ("IsNullOrUndefined", {}, None, OFF, True),
    ("IsNullOrUndefined", {}, 0, OFF, False),
    ("IsNullOrUndefined", {}, "", OFF, False),
    ("IsNullOrUndefined", {}, False, OFF, False),
    ("IsNullOrUndefined", {}, {"x": 1}, OFF, False),
    ("IsNullOrUndefined", {}, [], ON, False),
    ("IsNullOrUndefined", {}, [], OFF, False),
    ("IsNullOrUndefined", {}, Nested(None), OFF, True),
    ("IsNotNull", {}, MISSING, OFF, False),
    ("IsNotNull", {}, None, OFF, False),
    ("IsNotNull", {}, 0, OFF, True),
    ("IsNotNull", {}, "", OFF, True),
    ("IsNotNull", {}, False, OFF, True),
    ("IsNotNull", {}, [1], ON, True),
    ("IsNotNull", {}, [1], OFF, True),
    ("IsNotNull", {}, Nested("x"), OFF, True),
    ("IsNotNull", {}, Nested(None), OFF, False),
]


def _shape(value, arrays: bool) -> str:
    if isinstance(value, Nested):
        return "nested"
    if value is MISSING or value is None:
        return "null/missing"
    if isinstance(value, list):
        return "array-on" if arrays else "array-off"
    return "scalar"


def _row_id(row) -> str:
    op, operand, value, arrays, expected = row
    shown = operand.get("value", operand.get("values", ""))
    return f"{op}-{shown}-{value!r}-{'arrays' if arrays else 'noarrays'}-{'match' if expected else 'nomatch'}"


def _event_and_key(value):
    if isinstance(value, Nested):
        return {"id": "1", "eventType": "T", "subject": "s", "data": {"a": {"b": value.value}}}, "data.a.b"
    data = {} if value is MISSING else {"v": value}
    return {"id": "1", "eventType": "T", "subject": "s", "data": data}, "data.v"


@pytest.mark.parametrize("row", TRUTH_TABLE, ids=[_row_id(r) for r in TRUTH_TABLE])
def test_advanced_filter_truth_table(row):
    op, operand, value, arrays, expected = row
    event, key = _event_and_key(value)
    spec = {
        "enableAdvancedFilteringOnArrays": arrays,
        "advancedFilters": [{"operatorType": op, "key": key, **operand}],
    }
    assert compile_filter(spec).matches(event) is expected


REQUIRED_SHAPES = {"scalar", "null/missing", "array-on", "array-off", "nested"}


def test_truth_table_covers_every_operator_in_every_value_shape():
    rows_by_op: dict[str, list] = {}
    for row in TRUTH_TABLE:
        rows_by_op.setdefault(row[0], []).append(row)
    assert set(rows_by_op) - OPERATOR_TYPES == set(), "truth table uses operators the module doesn't know"
    missing_ops = OPERATOR_TYPES - set(rows_by_op)
    assert not missing_ops, f"operators without truth-table rows: {sorted(missing_ops)}"
    for op, rows in rows_by_op.items():
        outcomes = {r[4] for r in rows}
        assert outcomes == {True, False}, f"{op} needs both matching and non-matching rows"
        shapes = {_shape(r[2], r[3]) for r in rows}
        assert REQUIRED_SHAPES <= shapes, f"{op} lacks rows for {sorted(REQUIRED_SHAPES - shapes)}"


def test_module_exposes_exactly_the_nineteen_azure_operators():
    assert OPERATOR_TYPES == {
        "NumberIn", "NumberNotIn", "NumberLessThan", "NumberGreaterThan", "NumberLessThanOrEquals",
        "NumberGreaterThanOrEquals", "NumberInRange", "NumberNotInRange", "BoolEquals",
        "StringContains", "StringNotContains", "StringBeginsWith", "StringNotBeginsWith",
        "StringEndsWith", "StringNotEndsWith", "StringIn", "StringNotIn", "IsNullOrUndefined",
        "IsNotNull",
    }  # fmt: skip


# ---- whole-filter behaviour ------------------------------------------------------------------------

EG_EVENT = {
    "id": "1",
    "topic": "/subscriptions/s/resourceGroups/g/providers/Microsoft.EventGrid/topics/orders",
    "subject": "orders/1",
    "eventType": "NewOrder",
    "eventTime": "2026-01-01T00:00:00Z",
    "data": {"orderId": 1, "total": 12.5, "items": [{"sku": "A"}], "tags": ["x", "y"], "Customer": {"Tier": "gold"}},
    "dataVersion": "1.0",
    "metadataVersion": "1",
}
CE_EVENT = {
    "specversion": "1.0",
    "id": "1",
    "source": "/x",
    "type": "NewOrder",
    "subject": "orders/1",
    "time": "2026-01-01T00:00:00Z",
    "data": {"orderId": 1},
    "myext": "v",
    "comexampleothervalue": 5,
}


class _Untouchable(dict):
    def __getitem__(self, key):  # pragma: no cover - failing path
        raise AssertionError("empty filter must not read the event")

    def get(self, key, default=None):  # pragma: no cover - failing path
        raise AssertionError("empty filter must not read the event")


@pytest.mark.parametrize(
    "spec",
    [None, {}, {"includedEventTypes": None, "advancedFilters": [], "subjectBeginsWith": "", "subjectEndsWith": None}],
)
def test_empty_filter_matches_everything_without_reading_the_event(spec):
    compiled = compile_filter(spec)
    assert isinstance(compiled, EventFilter)
    assert compiled.matches_everything
    assert compiled.matches(_Untouchable(EG_EVENT)) is True


@pytest.mark.parametrize(
    ("included", "event", "expected"),
    [
        (["NewOrder"], EG_EVENT, True),
        (["neworder"], EG_EVENT, True),  # case-insensitive
        (["OrderShipped", "NEWORDER"], CE_EVENT, True),  # CloudEvents 'type'
        (["OrderShipped"], EG_EVENT, False),
        (["OrderShipped"], CE_EVENT, False),
        (["NewOrder"], {"id": "1", "data": {}}, False),  # no type at all
        (["All"], EG_EVENT, True),  # docs: "specify All to get all event types"
        (None, EG_EVENT, True),
    ],
)
def test_included_event_types_match_event_type_case_insensitively(included, event, expected):
    assert compile_filter({"includedEventTypes": included}).matches(event) is expected


@pytest.mark.parametrize(
    ("spec", "subject", "expected"),
    [
        ({"subjectBeginsWith": "orders/"}, "orders/1", True),
        ({"subjectBeginsWith": "ORDERS/"}, "orders/1", True),
        ({"subjectBeginsWith": "orders/"}, "Orders/1", True),
        ({"subjectBeginsWith": "orders/", "isSubjectCaseSensitive": True}, "Orders/1", False),
        ({"subjectEndsWith": ".jpg"}, "photos/A.JPG", True),
        ({"subjectBeginsWith": "ORDERS/", "isSubjectCaseSensitive": True}, "orders/1", False),
        ({"subjectBeginsWith": "orders/", "isSubjectCaseSensitive": True}, "orders/1", True),
        ({"subjectEndsWith": ".JPG"}, "photos/a.jpg", True),
        ({"subjectEndsWith": ".JPG", "isSubjectCaseSensitive": True}, "photos/a.jpg", False),
        ({"subjectBeginsWith": "photos/", "subjectEndsWith": ".jpg"}, "photos/a.png", False),
        ({"subjectBeginsWith": "photos/", "subjectEndsWith": ".jpg"}, "photos/a.jpg", True),
        ({"subjectBeginsWith": "orders/"}, None, False),  # missing subject = ""
        ({"subjectEndsWith": "x"}, "", False),
    ],
)
def test_subject_prefix_and_suffix_filters(spec, subject, expected):
    event = dict(EG_EVENT)
    if subject is None:
        del event["subject"]
    else:
        event["subject"] = subject
    assert compile_filter(spec).matches(event) is expected


@pytest.mark.parametrize(
    ("event", "op", "key", "operand", "expected"),
    [
        (EG_EVENT, "StringBeginsWith", "Subject", VS("orders/"), True),
        (EG_EVENT, "StringIn", "ID", VS("1"), True),
        (EG_EVENT, "StringIn", "EventType", VS("neworder"), True),
        (EG_EVENT, "StringIn", "DataVersion", VS("1.0"), True),
        (EG_EVENT, "StringEndsWith", "Topic", VS("/topics/orders"), True),
        (EG_EVENT, "NumberIn", "Data.OrderId", VS(1), True),  # data property names found case-insensitively
        (EG_EVENT, "StringIn", "data.customer.tier", VS("gold"), True),
        (EG_EVENT, "StringIn", "data.customer.tier.deeper", VS("gold"), False),  # walking into a string
        (EG_EVENT, "StringIn", "data.items.sku", VS("a"), False),  # no stepping into arrays of objects
        (CE_EVENT, "StringIn", "source", VS("/x"), True),
        (CE_EVENT, "StringIn", "type", VS("NewOrder"), True),
        (CE_EVENT, "StringIn", "specversion", VS("1.0"), True),
        (CE_EVENT, "StringIn", "myext", VS("v"), True),  # CloudEvents extension attribute
        (CE_EVENT, "StringBeginsWith", "comexampleothervalue", VS("5", "1"), True),  # docs' example
        (CE_EVENT, "StringIn", "otherext", VS("v"), False),
    ],
)
def test_keys_address_envelope_fields_extensions_and_nested_data(event, op, key, operand, expected):
    spec = {"advancedFilters": [{"operatorType": op, "key": key, **operand}]}
    assert compile_filter(spec).matches(event) is expected


def test_exact_case_key_wins_over_case_insensitive_match():
    event = {"data": {"Key": "upper", "key": "lower"}}
    assert compile_filter({"advancedFilters": [{"operatorType": "StringIn", "key": "data.key", "values": ["lower"]}]}).matches(event)
    assert compile_filter({"advancedFilters": [{"operatorType": "StringIn", "key": "data.Key", "values": ["upper"]}]}).matches(event)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        # different filters are ANDed
        ([{"operatorType": "NumberGreaterThan", "key": "data.total", "value": 10},
          {"operatorType": "StringIn", "key": "subject", "values": ["orders/1"]}], True),
        ([{"operatorType": "NumberGreaterThan", "key": "data.total", "value": 10},
          {"operatorType": "StringIn", "key": "subject", "values": ["orders/2"]}], False),
        # values of one filter are ORed
        ([{"operatorType": "StringContains", "key": "subject", "values": ["nope", "ders"]}], True),
        # ...but a Not operator fails if any value matches
        ([{"operatorType": "NumberNotIn", "key": "data.orderId", "values": [7, 1]}], False),
        ([{"operatorType": "StringNotBeginsWith", "key": "subject", "values": ["x", "ORDERS"]}], False),
        # the same key may appear in several filters
        ([{"operatorType": "NumberGreaterThan", "key": "data.total", "value": 10},
          {"operatorType": "NumberLessThan", "key": "data.total", "value": 12}], False),
    ],
)  # fmt: skip
def test_filters_are_anded_and_values_ored(filters, expected):
    assert compile_filter({"advancedFilters": filters}).matches(EG_EVENT) is expected


def test_all_filter_parts_must_match_together():
    spec = {
        "includedEventTypes": ["NewOrder"],
        "subjectBeginsWith": "orders/",
        "enableAdvancedFilteringOnArrays": True,
        "advancedFilters": [{"operatorType": "StringIn", "key": "data.tags", "values": ["Y"]}],
    }
    compiled = compile_filter(spec)
    assert compiled.matches(EG_EVENT) is True
    assert compiled.matches({**EG_EVENT, "eventType": "Other"}) is False
    assert compiled.matches({**EG_EVENT, "subject": "invoices/1"}) is False
    assert compiled.matches({**EG_EVENT, "data": {"tags": ["z"]}}) is False


def test_operator_type_is_accepted_case_insensitively():
    spec = {"advancedFilters": [{"operatorType": "numberin", "key": "data.orderId", "values": [1]}]}
    assert compile_filter(spec).matches(EG_EVENT) is True


# ---- validation --------------------------------------------------------------------------------------


def _adv(*filters):
    return {"advancedFilters": list(filters)}


INVALID = [
    pytest.param("not a dict", id="spec-not-object"),
    pytest.param({"includedEventTypes": "NewOrder"}, id="event-types-not-list"),
    pytest.param({"includedEventTypes": [1]}, id="event-types-not-strings"),
    pytest.param({"subjectBeginsWith": 5}, id="subject-begins-not-string"),
    pytest.param({"subjectEndsWith": ["x"]}, id="subject-ends-not-string"),
    pytest.param({"isSubjectCaseSensitive": "true"}, id="case-flag-not-bool"),
    pytest.param({"enableAdvancedFilteringOnArrays": 1}, id="arrays-flag-not-bool"),
    pytest.param({"advancedFilters": {"operatorType": "IsNotNull", "key": "id"}}, id="advanced-not-list"),
    pytest.param(_adv("IsNotNull"), id="advanced-entry-not-object"),
    pytest.param(_adv({"operatorType": "StringLike", "key": "subject", "values": ["a"]}), id="unknown-operator"),
    pytest.param(_adv({"key": "subject", "values": ["a"]}), id="missing-operator"),
    pytest.param(_adv({"operatorType": 3, "key": "subject", "values": ["a"]}), id="operator-not-string"),
    pytest.param(_adv({"operatorType": "StringIn", "values": ["a"]}), id="missing-key"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "", "values": ["a"]}), id="empty-key"),
    pytest.param(_adv({"operatorType": "StringIn", "key": 5, "values": ["a"]}), id="key-not-string"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "data..a", "values": ["a"]}), id="key-empty-segment"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "data.", "values": ["a"]}), id="key-trailing-dot"),
    pytest.param(_adv({"operatorType": "IsNotNull"}), id="null-check-missing-key"),
    pytest.param(_adv({"operatorType": "NumberLessThan", "key": "data.v"}), id="single-value-missing"),
    pytest.param(_adv({"operatorType": "NumberLessThan", "key": "data.v", "value": None}), id="single-value-null"),
    pytest.param(_adv({"operatorType": "NumberLessThan", "key": "data.v", "values": [1]}), id="single-value-given-as-values"),
    pytest.param(_adv({"operatorType": "NumberGreaterThan", "key": "data.v", "value": "5"}), id="number-value-string"),
    pytest.param(_adv({"operatorType": "NumberGreaterThan", "key": "data.v", "value": True}), id="number-value-bool"),
    pytest.param(_adv({"operatorType": "NumberGreaterThan", "key": "data.v", "value": float("nan")}), id="number-value-nan"),
    pytest.param(_adv({"operatorType": "BoolEquals", "key": "data.v", "value": 1}), id="bool-value-number"),
    pytest.param(_adv({"operatorType": "BoolEquals", "key": "data.v", "value": "true"}), id="bool-value-string"),
    pytest.param(_adv({"operatorType": "BoolEquals", "key": "data.v"}), id="bool-value-missing"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "data.v"}), id="values-missing"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "data.v", "value": "a"}), id="values-given-as-value"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "data.v", "values": "a"}), id="values-not-list"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "data.v", "values": []}), id="values-empty"),
    pytest.param(_adv({"operatorType": "StringIn", "key": "data.v", "values": ["a", 1]}), id="string-values-with-number"),
    pytest.param(_adv({"operatorType": "StringContains", "key": "data.v", "values": [None]}), id="string-values-with-null"),
    pytest.param(_adv({"operatorType": "NumberIn", "key": "data.v", "values": [1, "2"]}), id="number-values-with-string"),
    pytest.param(_adv({"operatorType": "NumberNotIn", "key": "data.v", "values": [False]}), id="number-values-with-bool"),
    pytest.param(_adv({"operatorType": "NumberInRange", "key": "data.v", "values": [1, 2]}), id="range-not-pairs"),
    pytest.param(_adv({"operatorType": "NumberInRange", "key": "data.v", "values": [[1, 2, 3]]}), id="range-triple"),
    pytest.param(_adv({"operatorType": "NumberInRange", "key": "data.v", "values": [[1]]}), id="range-single"),
    pytest.param(_adv({"operatorType": "NumberNotInRange", "key": "data.v", "values": [[5, 1]]}), id="range-low-above-high"),
    pytest.param(_adv({"operatorType": "NumberNotInRange", "key": "data.v", "values": [["1", 2]]}), id="range-string-bound"),
    pytest.param(_adv({"operatorType": "NumberInRange", "key": "data.v", "value": [1, 2]}), id="range-given-as-value"),
    pytest.param(_adv({"operatorType": "NumberInRange", "key": "data.v", "values": []}), id="range-empty"),
]


@pytest.mark.parametrize("spec", INVALID)
def test_invalid_filter_is_rejected(spec):
    with pytest.raises(FilterError) as info:
        compile_filter(spec)
    assert info.value.code == "InvalidFilter"
    assert info.value.message and str(info.value) == info.value.message


def _null_checks(n):
    return [{"operatorType": "IsNotNull", "key": f"data.k{i}"} for i in range(n)]


def _string_in(n_values, key="data.v"):
    return {"operatorType": "StringIn", "key": key, "values": [f"v{i}" for i in range(n_values)]}


LIMITS = [
    # (spec, accepted?) -- exactly at the documented limit is fine, one more is rejected
    pytest.param({"advancedFilters": _null_checks(MAX_ADVANCED_FILTERS)}, True, id="25-filters-ok"),
    pytest.param({"advancedFilters": _null_checks(MAX_ADVANCED_FILTERS + 1)}, False, id="26-filters-rejected"),
    pytest.param(_adv(_string_in(MAX_FILTER_VALUES)), True, id="25-values-in-one-filter-ok"),
    pytest.param(_adv(_string_in(MAX_FILTER_VALUES + 1)), False, id="26-values-in-one-filter-rejected"),
    pytest.param(_adv(_string_in(13, "data.a"), _string_in(12, "data.b")), True, id="25-values-across-filters-ok"),
    pytest.param(_adv(_string_in(13, "data.a"), _string_in(13, "data.b")), False, id="26-values-across-filters-rejected"),
    pytest.param(
        _adv(_string_in(24), {"operatorType": "NumberGreaterThan", "key": "data.n", "value": 1},
             {"operatorType": "IsNullOrUndefined", "key": "data.z"}),
        True, id="single-value-counts-one-null-check-counts-zero",
    ),
    pytest.param(
        _adv(_string_in(24), {"operatorType": "NumberGreaterThan", "key": "data.n", "value": 1},
             {"operatorType": "BoolEquals", "key": "data.b", "value": True}),
        False, id="single-values-count-towards-limit",
    ),
    pytest.param(
        _adv(_string_in(23), {"operatorType": "NumberInRange", "key": "data.n", "values": [[1, 2], [3, 4]]}),
        True, id="each-range-counts-one-ok",
    ),
    pytest.param(
        _adv(_string_in(24), {"operatorType": "NumberInRange", "key": "data.n", "values": [[1, 2], [3, 4]]}),
        False, id="each-range-counts-one-rejected",
    ),
    pytest.param(
        _adv({"operatorType": "StringContains", "key": "data.v", "values": ["a" * MAX_STRING_VALUE_LENGTH]}),
        True, id="512-char-string-ok",
    ),
    pytest.param(
        _adv({"operatorType": "StringContains", "key": "data.v", "values": ["a" * (MAX_STRING_VALUE_LENGTH + 1)]}),
        False, id="513-char-string-rejected",
    ),
    pytest.param(
        _adv({"operatorType": "StringIn", "key": "data.a.b.c.d.e.f.g.h", "values": ["x"]}), True, id="deep-key-ok"
    ),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "accepted"), LIMITS)
def test_documented_limits(spec, accepted):
    if accepted:
        assert isinstance(compile_filter(spec), EventFilter)
    else:
        with pytest.raises(FilterError):
            compile_filter(spec)


def test_documented_limit_values():
    # https://learn.microsoft.com/azure/event-grid/event-filtering#limitations
    assert (MAX_ADVANCED_FILTERS, MAX_FILTER_VALUES, MAX_STRING_VALUE_LENGTH) == (25, 25, 512)


def test_filter_error_is_a_value_error_with_code_and_message():
    err = FilterError("bad", code="Custom")
    assert isinstance(err, ValueError)
    assert (err.message, err.code, str(err)) == ("bad", "Custom", "bad")
    assert FilterError("x").code == "InvalidFilter"


def test_compiled_filter_is_independent_of_later_spec_mutation():
    values = ["a"]
    spec = {"advancedFilters": [{"operatorType": "StringIn", "key": "data.v", "values": values}]}
    compiled = compile_filter(spec)
    values.append("b")
    spec["advancedFilters"].clear()
    assert compiled.matches({"data": {"v": "a"}}) is True
    assert compiled.matches({"data": {"v": "b"}}) is False
