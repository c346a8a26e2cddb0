#!/usr/bin/env bash
# RecBole 1.2.1's own virtualenv for the peer benchmark (never shopseq's): the pinned versions
# and the reasons for each pin live in ../shared/peers/recbole/ (setup.sh, NOTES.md).
#   bash benchmarks/peers/setup_recbole.sh [VENV_DIR]   (default benchmarks/peers/.venv-recbole)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SHARED_PEER="${SHOPSEQ_SHARED_PEERS:-$HERE/../../../shared/peers/recbole}"
if [ ! -f "$SHARED_PEER/setup.sh" ]; then
    echo "the RecBole peer scripts are absent ($SHARED_PEER/setup.sh); nothing to set up" >&2
    exit 1
fi
exec bash "$SHARED_PEER/setup.sh" "${1:-$HERE/.venv-recbole}"
