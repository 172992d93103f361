"""Consume Sluice's recoverable Redis channels: every change once, in order, per channel."""

from .consumer import Consumer, Snapshot, Stats
from .dedup import RecentIds
from .errors import EventParseError, HandlerError, ResyncNeeded, SluiceConsumerError
from .event import Event, Operation, Position, parse_event
from .keys import app_channels, history_key, meta_key, state_key
from .store import JsonFilePositionStore, MemoryPositionStore, PositionStore

__all__ = [
    "Consumer", "Snapshot", "Stats", "RecentIds", "EventParseError", "HandlerError",
    "ResyncNeeded", "SluiceConsumerError", "Event", "Operation", "Position", "parse_event",
    "app_channels", "history_key", "meta_key", "state_key", "JsonFilePositionStore",
    "MemoryPositionStore", "PositionStore",
]
