"""The event Sluice publishes, as a typed object (see schema/event.schema.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import EventParseError

Operation = Literal["INSERT", "UPDATE", "DELETE", "TRUNCATE", "SNAPSHOT", "MOVED_OUT"]
OPERATIONS: frozenset[str] = frozenset(get_args(Operation))

# JSON key -> attribute name; the schema's properties, one for one (tests/test_schema.py).
FIELDS: dict[str, str] = {
    "seq": "seq",
    "epoch": "epoch",
    "eventId": "event_id",
    "operation": "operation",
    "app": "app",
    "tenantId": "tenant_id",
    "dataType": "data_type",
    "table": "table",
    "recordId": "record_id",
    "data": "data",
    "old": "old",
    "changedFields": "changed_fields",
    "unchangedColumns": "unchanged_columns",
    "timestamp": "timestamp",
    "source": "source",
    "replay": "replay",
}
REQUIRED: tuple[str, ...] = (
    "eventId", "operation", "app", "tenantId", "dataType", "table", "recordId", "data",
    "timestamp", "source",
)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a consumer is on a channel: the last applied `seq` within `epoch`."""

    epoch: str
    seq: int

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "Position":
        return cls(epoch=str(value["epoch"]), seq=int(value["seq"]))


@dataclass(slots=True)
class Event:
    """One change, as published on `channel`. Unknown JSON keys are ignored."""

    channel: str
    event_id: str
    operation: Operation
    app: str
    tenant_id: str
    data_type: str
    table: str
    record_id: str | None
    data: dict[str, Any] | None
    timestamp: str
    source: dict[str, Any]
    seq: int | None = None
    epoch: str | None = None
    old: dict[str, Any] | None = None
    changed_fields: list[str] | None = None
    unchanged_columns: list[str] | None = None
    replay: Literal["change_log", "dead_letter"] | None = None
    raw: bytes = field(default=b"", repr=False)
    from_history: bool = False
    """True when the SDK read this event from sluice:history (catch-up), not live."""

    @property
    def position(self) -> Position | None:
        if self.seq is None or self.epoch is None:
            return None
        return Position(self.epoch, self.seq)

    @property
    def is_replay(self) -> bool:
        return self.replay is not None

    @property
    def removes_record(self) -> bool:
        """DELETE and MOVED_OUT: drop the record."""
        return self.operation == "DELETE" or self.operation == "MOVED_OUT"


def parse_event(raw: bytes | str, channel: str, *, from_history: bool = False) -> Event:
    """Parse one published message. Raises EventParseError when it is not a Sluice event."""
    if isinstance(raw, str):
        raw = raw.encode()
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise EventParseError(channel, raw, f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventParseError(channel, raw, "not a JSON object")
    try:
        event = Event(
            channel,
            doc["eventId"],
            doc["operation"],
            doc["app"],
            doc["tenantId"],
            doc["dataType"],
            doc["table"],
            doc["recordId"],
            doc["data"],
            doc["timestamp"],
            doc["source"],
            doc.get("seq"),
            doc.get("epoch"),
            doc.get("old"),
            doc.get("changedFields"),
            doc.get("unchangedColumns"),
            doc.get("replay"),
            raw,
            from_history,
        )
    except KeyError as exc:
        raise EventParseError(channel, raw, f"missing key {exc.args[0]!r}") from None
    if event.operation not in OPERATIONS:
        raise EventParseError(channel, raw, f"unknown operation {event.operation!r}")
    if (event.seq is None) != (event.epoch is None):
        raise EventParseError(channel, raw, "seq and epoch go together")
    return event
