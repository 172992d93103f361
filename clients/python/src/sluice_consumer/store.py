"""Where the consumer keeps its (epoch, seq) per channel between runs.

Keep positions next to the data your handler writes: implement `PositionStore` on your own
database (same transaction as the handler's writes, ideally), or use one of the two here.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from .event import Position


@runtime_checkable
class PositionStore(Protocol):
    """Positions per channel. `save` is called after the handler applied the event (or a
    resync/bootstrap moved the channel); `flush` when a channel goes idle and on stop."""

    async def load(self) -> dict[str, Position]: ...

    async def save(self, channel: str, position: Position) -> None: ...

    async def flush(self) -> None: ...


class MemoryPositionStore:
    """Positions in a dict: survives reconnects, not a process restart."""

    def __init__(self, positions: dict[str, Position] | None = None) -> None:
        self.positions: dict[str, Position] = dict(positions or {})

    async def load(self) -> dict[str, Position]:
        return dict(self.positions)

    async def save(self, channel: str, position: Position) -> None:
        self.positions[channel] = position

    async def flush(self) -> None:
        return None


class JsonFilePositionStore:
    """Positions in a JSON file, replaced atomically (write to a temp file, fsync, rename).

    Writes at most every `flush_interval` seconds while events flow (0: on every save) and on
    `flush`, so after a crash the consumer may deliver again the events of the last interval:
    handlers must be idempotent (see the README).
    """

    def __init__(self, path: str | os.PathLike[str], flush_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self._positions: dict[str, Position] = {}
        self._dirty = False
        self._last_write = 0.0

    async def load(self) -> dict[str, Position]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        doc = json.loads(text) if text.strip() else {}
        self._positions = {ch: Position.from_json(p) for ch, p in doc.get("channels", {}).items()}
        return dict(self._positions)

    async def save(self, channel: str, position: Position) -> None:
        self._positions[channel] = position
        self._dirty = True
        if time.monotonic() - self._last_write >= self.flush_interval:
            self._write()

    async def flush(self) -> None:
        if self._dirty:
            self._write()

    def _write(self) -> None:
        doc = {"channels": {ch: p.to_json() for ch, p in sorted(self._positions.items())}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(doc, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False
        self._last_write = time.monotonic()
