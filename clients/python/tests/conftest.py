from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest

from cluster_harness import RedisCluster
from harness import SCHEMA, RedisServer, Sluice, Stack


@pytest.fixture(scope="session")
def schema_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    server = RedisServer(persistent=True)
    yield server
    server.close()


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    c = RedisCluster(masters=3)
    yield c
    c.close()


@pytest.fixture
def cluster_with_replicas() -> Iterator[RedisCluster]:
    c = RedisCluster(masters=3, replicas=1)
    yield c
    c.close()


class Servers:
    """Redis + stack + sluice run, torn down in reverse order."""

    def __init__(self, redis: RedisServer, config_extra: str = "", mode: str = "trigger") -> None:
        self.redis = redis
        self.stack = Stack(redis.url, mode=mode, config_extra=config_extra)
        self.sluice = Sluice(self.stack)

    def close(self) -> None:
        self.sluice.close()
        self.stack.close()


@pytest.fixture
def make_servers() -> Iterator:
    made: list[Servers] = []

    def make(redis: RedisServer, config_extra: str = "", mode: str = "trigger") -> Servers:
        s = Servers(redis, config_extra, mode)
        made.append(s)
        return s

    yield make
    for s in reversed(made):
        s.close()
