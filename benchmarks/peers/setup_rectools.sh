#!/usr/bin/env bash
# RecTools' own virtualenv for the peer benchmark (never shopseq's).
#   bash benchmarks/peers/setup_rectools.sh [VENV_DIR]   (default benchmarks/peers/.venv-rectools)
# Pins: torch==2.13.0 (the CPU wheel; never unpinned), rectools[torch]==0.19.0 (latest on PyPI on
# 2026-11-30; it resolved numpy 1.26.4, pandas 2.3.3, pytorch-lightning 2.5.2 here). Installed
# and ran with no workaround.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$HERE/.venv-rectools}"
if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
    echo "refusing to replace $VENV: not a virtualenv" >&2
    exit 1
fi
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/pip" install --quiet "torch==2.13.0" "rectools[torch]==0.19.0"
"$VENV/bin/pip" check
"$VENV/bin/python" -c "import rectools, torch; from rectools.models import SASRecModel; print('rectools', rectools.__version__, 'torch', torch.__version__)"
