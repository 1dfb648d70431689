#!/usr/bin/env bash
# Create .venv (if missing) and install tnlm with everything the models, trainer and tests need.
# torch: the CPU build 2.13.0 is installed first when no torch is present (a plain "torch"
# requirement could pull a multi-gigabyte CUDA build); the project itself only asks torch>=2.2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv/bin/python -m pip install -q -e ".[models,test,bench]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import tnlm, torch; print(f'tnlm {tnlm.__version__} ready (torch {torch.__version__})')"
