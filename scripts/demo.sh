#!/usr/bin/env bash
# The main job end to end on the built-in synthetic shop (sets itself up on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/shopseq demo "$@"
