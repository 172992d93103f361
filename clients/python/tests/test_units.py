"""The SDK's pieces without servers: types against the schema, parsing, dedup, stores."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import fields

import pytest

from harness import SCHEMA
from sluice_consumer import (EventParseError, JsonFilePositionStore, MemoryPositionStore, Position,
                             RecentIds, app_channels, parse_event)
from sluice_consumer.event import FIELDS, OPERATIONS, REQUIRED, Event

SAMPLE = {
    "seq": 7, "epoch": "e1", "eventId": "cl:42", "operation": "UPDATE", "app": "crm",
    "tenantId": "tenant-1", "dataType": "credit-configs", "table": "public.credit_configurations",
    "recordId": "k1", "data": {"config_id": "k1", "credit_cost": 3}, "old": {"credit_cost": 1},
    "changedFields": ["credit_cost"], "timestamp": "2026-01-01T00:00:00.000001Z",
    "source": {"mode": "trigger", "id": 42}, "somethingNew": True,
}


def schema() -> dict:
    return json.loads(SCHEMA.read_text())


def test_event_fields_match_the_schema():
    props = schema()["properties"]
    assert set(FIELDS) == set(props), "every schema property has an Event field and back"
    assert set(REQUIRED) == set(schema()["required"])
    assert OPERATIONS == set(props["operation"]["enum"])
    hints = typing.get_type_hints(Event)
    names = {f.name for f in fields(Event)}
    for key, attr in FIELDS.items():
        assert attr in names
        optional = type(None) in typing.get_args(hints[attr])
        nullable = "null" in (props[key].get("type") or []) if isinstance(props[key].get("type"), list) else False
        if key in REQUIRED:
            assert optional == nullable, f"{key}: Optional iff the schema allows null"
        else:
            assert optional, f"{key} is optional in the schema"
    replay_values = set(typing.get_args(typing.get_args(hints["replay"])[0]))
    assert replay_values == set(props["replay"]["enum"])


def test_parse_event(schema_validator):
    schema_validator.validate(SAMPLE)
    ev = parse_event(json.dumps(SAMPLE), "crm:tenant-1:credit-configs")
    assert ev.position == Position("e1", 7)
    assert (ev.event_id, ev.operation, ev.record_id, ev.changed_fields) == ("cl:42", "UPDATE", "k1", ["credit_cost"])
    assert not ev.is_replay and not ev.removes_record and not ev.from_history


@pytest.mark.parametrize("raw,reason", [
    (b"nope", "not JSON"),
    (b"[1]", "not a JSON object"),
    (json.dumps({k: v for k, v in SAMPLE.items() if k != "eventId"}).encode(), "missing key 'eventId'"),
    (json.dumps(dict(SAMPLE, operation="MERGE")).encode(), "unknown operation"),
    (json.dumps({k: v for k, v in SAMPLE.items() if k != "epoch"}).encode(), "seq and epoch"),
])
def test_parse_errors(raw, reason):
    with pytest.raises(EventParseError, match=reason):
        parse_event(raw, "c")


def test_recent_ids_are_bounded():
    ids = RecentIds(3)
    assert ids.add("a") and not ids.add("a")
    for x in "bcd":
        ids.add(x)
    assert "a" not in ids and len(ids) == 3 and "d" in ids


def test_app_channels():
    assert app_channels("crm") == ["crm:*:*"]
    assert app_channels("crm", ["t1", "t2"]) == ["crm:t1:*", "crm:t2:*"]
    assert app_channels("crm", ["t1"], ["roles"]) == ["crm:t1:roles"]


async def test_json_file_store_round_trip(tmp_path):
    path = tmp_path / "pos.json"
    store = JsonFilePositionStore(path, flush_interval=60)
    assert await store.load() == {}
    await store.save("a", Position("e", 1))  # first save writes (nothing written yet)
    await store.save("a", Position("e", 2))  # within the interval: kept in memory
    assert await JsonFilePositionStore(path).load() == {"a": Position("e", 1)}
    await store.flush()
    assert await JsonFilePositionStore(path).load() == {"a": Position("e", 2)}
    assert list(tmp_path.iterdir()) == [path]


async def test_memory_store():
    store = MemoryPositionStore({"a": Position("e", 1)})
    await store.save("b", Position("e", 2))
    assert await store.load() == {"a": Position("e", 1), "b": Position("e", 2)}
