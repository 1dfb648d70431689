#!/usr/bin/env bash
# Create .venv (if missing) and install tnlm with everything the models, trainer and tests need.
# torch: the CPU build 2.13.0 is installed first when no torch is present (a plain "torch"
# requirement could pull a multi-gigabyte CUDA build); the project itself only asks torch>=2.2.
# Quiet: one summary line on success; on a failure, pip's own output and a line saying which step
# failed (exit status 1). In your own environment use: pip install -e ".[models]".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
log=$(mktemp "${TMPDIR:-/tmp}/tnlm-setup.XXXXXX")
trap 'rm -f "$log"' EXIT

step() {  # step DESCRIPTION COMMAND...: run quietly, show the output only if it fails
  local what=$1
  shift
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: $what failed (output above)" >&2
    exit 1
  fi
}

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $PY" "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true  # optional
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  step "installing torch 2.13.0 (CPU build)" .venv/bin/python -m pip install -q "torch==2.13.0"
fi
step "installing tnlm with its models, test and bench extras" \
  .venv/bin/python -m pip install -q -e ".[models,test,bench]"
.venv/bin/python -c "import tnlm, torch; print(f'tnlm {tnlm.__version__} ready in .venv (torch {torch.__version__})')"
