#!/usr/bin/env bash
# The project's test command (README, CI): set up, check generated code is current, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/gen_protos.py --check
# Two workers (CI has two cores), each taking whole test files: a file's module fixtures (agents, compiled models)
# are made once, and files that start agents on fixed ports (the tutorial pages) stay on one worker.
# DEPLOY_TEST_WORKERS=0 runs everything in this one process.
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${DEPLOY_TEST_WORKERS:-2}" --dist loadfile "$@"
