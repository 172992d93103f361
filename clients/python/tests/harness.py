"""Real servers for the tests: redis-server, examples/stack (PostgreSQL + config), sluice run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
TARGET = Path(os.environ.get("SLUICE_TARGET_DIR", REPO / "target")) / "debug"
SCHEMA = REPO / "schema" / "event.schema.json"


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own on a free port; `persistent` keeps an AOF across restarts."""

    def __init__(self, persistent: bool = False) -> None:
        self.port = free_port()
        self.persistent = persistent
        self.dir = tempfile.mkdtemp(prefix="sluice-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--logfile", str(Path(self.dir) / "redis.log"),
                "--client-output-buffer-limit", "pubsub 32mb 8mb 60"]
        args += ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.cli("PING") == "PONG", 10, "redis-server")

    def cli(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return out.stdout.strip()

    def log(self) -> str:
        return (Path(self.dir) / "redis.log").read_text(errors="replace")

    def stop(self) -> None:
        """Shut down cleanly (with persistence, the AOF has everything)."""
        if self.proc and self.proc.poll() is None:
            self.cli("SHUTDOWN", "NOSAVE")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, kill: bool = False) -> None:
        """Stop (cleanly, or with SIGKILL) and start again on the same port and directory."""
        if kill and self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()
        self.start()

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Stack:
    """examples/stack: a throwaway PostgreSQL with the seed tables, and a sluice.toml."""

    def __init__(self, redis_url: str, mode: str = "trigger", config_extra: str = "") -> None:
        self.tmp = tempfile.mkdtemp(prefix="sluice-stack-")
        args = [str(TARGET / "examples" / "stack"), "--mode", mode, "--redis", redis_url]
        if config_extra:
            extra = Path(self.tmp) / "extra.toml"
            extra.write_text(config_extra)
            args += ["--config-extra", str(extra)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"stack exited: {self.proc.wait()}")
        info = json.loads(line)
        self.database_url: str = info["database_url"]
        self.config: str = info["config"]
        self.sluice: str = info["sluice"]

    def psql(self, sql: str) -> str:
        out = subprocess.run(["psql", self.database_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Sluice:
    """`sluice run --config <config>` as a child process."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.log = open(Path(stack.tmp) / "sluice.log", "ab")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([self.stack.sluice, "run", "--config", self.stack.config],
                                     stdout=self.log, stderr=self.log)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def meta_seqs(redis: RedisServer, pattern: str = "crm:*") -> dict[str, tuple[str, int]]:
    """Every channel's (epoch, seq) as Redis has it."""
    out: dict[str, tuple[str, int]] = {}
    keys = redis.cli("--scan", "--pattern", f"sluice:meta:{{{pattern}}}").split()
    for key in keys:
        epoch, seq = redis.cli("HMGET", key, "epoch", "seq").split("\n")
        out[key[len("sluice:meta:{"):-1]] = (epoch, int(seq))
    return out
