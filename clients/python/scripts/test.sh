#!/usr/bin/env bash
# The SDK's test suite from a clean clone: builds sluice and examples/stack, installs the SDK
# and its test dependencies into clients/python/.venv, runs pytest against real servers
# (redis-server and psql must be on PATH; PostgreSQL binaries as examples/stack needs them).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
(cd "$repo" && cargo build --bin sluice --example stack)
python3 -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q --upgrade pip
"$here/.venv/bin/pip" install -q -e "$here[test]"
cd "$here"
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
