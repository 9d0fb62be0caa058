#!/usr/bin/env bash
# The project's test command (README, CI): set up, check generated code is current, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/gen_protos.py --check
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
