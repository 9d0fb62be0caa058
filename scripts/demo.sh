#!/usr/bin/env bash
# The main job on an embedded default: set up, make the ResNet-18 sample (seeded weights, no download),
# and `deploy push` it to `local` (an agent on loopback, started on demand) with a benchmark.
# Extra arguments go to `deploy push` (e.g. --json, --fp16, -n 200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out/models
.venv/bin/python scripts/make_models.py out/models --only resnet18
exec .venv/bin/deploy push out/models/resnet18.onnx --device local --bench "$@"
