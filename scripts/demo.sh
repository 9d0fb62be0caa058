#!/usr/bin/env bash
# The main job on an embedded default: a local agent on loopback, started on demand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/deploy info --device local
