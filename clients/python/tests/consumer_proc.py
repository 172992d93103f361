"""A consumer process the tests kill with SIGKILL and start again.

Its "database" is an append-only log of applied events; the handler is idempotent (it skips a
seq it already applied, as read back from the log), and positions live in a JSON file.
usage: consumer_proc.py REDIS_URL STORE_PATH LOG_PATH
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import jsonschema

from harness import SCHEMA
from sluice_consumer import Consumer, Event, JsonFilePositionStore, ResyncNeeded


def main() -> None:
    redis_url, store_path, log_path = sys.argv[1:4]
    applied: dict[str, tuple[str, int]] = {}
    if Path(log_path).exists():
        for line in Path(log_path).read_text().splitlines():
            doc = json.loads(line)
            if "seq" in doc:
                applied[doc["channel"]] = (doc["epoch"], doc["seq"])
    log = open(log_path, "a")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))

    def handle(event: Event) -> None:
        validator.validate(json.loads(event.raw))  # slow enough to be killed mid-stream, too
        if applied.get(event.channel) is not None:
            epoch, seq = applied[event.channel]
            if event.epoch == epoch and event.seq is not None and event.seq <= seq:
                return  # applied before the crash: at-least-once delivery, idempotent handler
        log.write(json.dumps({"channel": event.channel, "epoch": event.epoch, "seq": event.seq,
                              "eventId": event.event_id, "recordId": event.record_id}) + "\n")
        log.flush()
        os.fsync(log.fileno())
        applied[event.channel] = (event.epoch or "", event.seq or 0)

    def on_resync(notice: ResyncNeeded) -> None:
        log.write(json.dumps({"channel": notice.channel, "resync": notice.reason}) + "\n")
        log.flush()

    consumer = Consumer(redis_url, ["crm:*:*"], handle, on_resync=on_resync,
                        store=JsonFilePositionStore(store_path, flush_interval=0.02))
    asyncio.run(consumer.run())


if __name__ == "__main__":
    main()
