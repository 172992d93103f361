"""Errors and notices the SDK raises or hands to the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .event import Event, Position


class SluiceConsumerError(Exception):
    """Base class of the SDK's errors."""


class ClusterUnavailable(SluiceConsumerError, ConnectionError):
    """No node of the Redis Cluster answered, or a slot has no master (the consumer retries)."""


class EventParseError(SluiceConsumerError):
    """A message on a Sluice channel is not a valid event."""

    def __init__(self, channel: str, raw: bytes, reason: str) -> None:
        super().__init__(f"{channel}: {reason}: {raw[:200]!r}")
        self.channel = channel
        self.raw = raw
        self.reason = reason


class HandlerError(SluiceConsumerError):
    """The application's handler raised; the consumer stopped without moving past the event."""

    def __init__(self, event: "Event", cause: BaseException) -> None:
        super().__init__(
            f"handler failed on {event.channel} seq={event.seq} eventId={event.event_id}: {cause!r}"
        )
        self.event = event
        self.__cause__ = cause


ResyncReason = Literal["epoch_changed", "history_trimmed", "position_ahead"]


@dataclass(frozen=True, slots=True)
class ResyncNeeded:
    """History cannot cover what this consumer missed on `channel`.

    - `epoch_changed`: Redis lost the channel's state (restart without persistence, eviction,
      flush); numbering started again in a new epoch.
    - `history_trimmed`: the missed messages were trimmed (`history.max_len`) or expired
      (`history.ttl`) from `sluice:history:{<channel>}`.
    - `position_ahead`: Redis has fewer messages than this consumer applied in the same epoch,
      or other messages under the seqs it applied (Redis restored an older copy of its data;
      in a cluster, a master failed over to a replica that had not received them).

    `last` is the position the consumer had applied (None: nothing yet), `head` the position the
    channel is at, `first_available` the oldest seq history still holds (None: none).
    Resynchronise in the callback (`await consumer.bootstrap(channel)` for routes with state,
    or your source of truth); without a bootstrap the consumer goes on after `head`.
    """

    channel: str
    reason: ResyncReason
    last: "Position | None"
    head: "Position"
    first_available: int | None = None
