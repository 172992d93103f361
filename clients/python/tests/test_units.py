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


def test_glob_match_follows_redis():
    from sluice_consumer.keys import glob_match
    assert glob_match("crm:*:*", "crm:t1:roles") and not glob_match("crm:t1:*", "crm:t2:roles")
    assert glob_match("crm:t?:x", "crm:t1:x") and not glob_match("crm:t?:x", "crm:t10:x")
    assert glob_match("crm:[^a]:x", "crm:b:x") and not glob_match("crm:[^a]:x", "crm:a:x")
    assert glob_match("crm:[a-c]:x", "crm:b:x") and glob_match("[!]", "!")  # `!` is no negation
    assert glob_match(r"crm:\*", "crm:*") and not glob_match(r"crm:\*", "crm:x")


def test_cluster_urls():
    from sluice_consumer.topology import Seeds, is_cluster_url
    seeds = Seeds.parse("rediss+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/?ssl_cert_reqs=none")
    assert seeds.addrs == ("10.0.0.1:7000", "10.0.0.2:6379", "[::1]:7002")
    assert seeds.node_url("10.0.0.9:7005") == "rediss://u:p%40ss@10.0.0.9:7005/?ssl_cert_reqs=none"
    assert Seeds.parse("redis://h:7000").addrs == ("h:7000",)  # cluster=True with a plain URL
    assert is_cluster_url("redis+cluster://h:1") and not is_cluster_url("redis://h:1")
    with pytest.raises(ValueError):
        Seeds.parse("http://h:1")


def test_redirections_and_transient_errors():
    from redis.exceptions import MovedError, ResponseError, TryAgainError
    from sluice_consumer.topology import Redirect, is_transient, redirect_of
    assert redirect_of(MovedError("12 10.0.0.1:7000")) == Redirect("MOVED", 12, "10.0.0.1:7000")
    assert redirect_of(ResponseError("ASK 12 10.0.0.1:7000")) == Redirect("ASK", 12, "10.0.0.1:7000")
    piped = ResponseError("Command # 1 (HGETALL k) of pipeline caused error: MOVED 5 h:1")
    assert redirect_of(piped) == Redirect("MOVED", 5, "h:1")
    piped5 = ResponseError("Command # 2 (XRANGE k) of pipeline caused error: ('ASK 5 h:1',)")  # redis-py 5
    assert redirect_of(piped5) == Redirect("ASK", 5, "h:1")
    assert redirect_of(ResponseError("WRONGTYPE nope")) is None
    assert is_transient(TryAgainError()) and is_transient(ResponseError("CLUSTERDOWN The cluster is down"))
    assert not is_transient(ResponseError("NOPERM no"))
