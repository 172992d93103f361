"""A bounded set of recently applied event ids (per channel)."""

from __future__ import annotations

from collections import deque


class RecentIds:
    """Remembers the last `capacity` ids added; older ones are forgotten."""

    __slots__ = ("capacity", "_ids", "_order")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, event_id: str) -> bool:
        """Add an id; False when it was already there."""
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self.capacity:
            self._ids.discard(self._order.popleft())
        return True
