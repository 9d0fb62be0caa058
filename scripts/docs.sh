#!/usr/bin/env bash
# Build the documentation site into site/ (open site/index.html). Regenerates the generated reference pages first
# (scripts/gen_docs.py), so the site always shows the code as it is; `--serve` serves it on 127.0.0.1:8000 instead.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/mkdocs ] || bash scripts/setup.sh
export NO_MKDOCS_2_WARNING=1  # Material 9.x prints a banner about its successor on every build
.venv/bin/python scripts/gen_docs.py
if [ "${1:-}" = "--serve" ]; then
  exec .venv/bin/mkdocs serve --strict
fi
exec .venv/bin/mkdocs build --strict --site-dir site "$@"
