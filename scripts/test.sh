#!/usr/bin/env bash
# The test suite (sets itself up on a fresh machine). Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the long tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check shopseq tests benchmarks
exec .venv/bin/python -m pytest -q "$@"
