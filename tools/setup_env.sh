#!/usr/bin/env bash
# One-command, idempotent environment setup for dcinet_d2.
#
# Creates .venv (Python 3.11) at the repository root with torch 2.14.1 + torchvision 0.29.1,
# Detectron2 (left alone when already importable, otherwise built pure-Python from PyPI's
# pb1-detectron2==0.6 with upstream's later fixes, see tools/install_detectron2.py) and this
# package in editable mode with its `dev` extra. A second run only checks and finishes in seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DCINET_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3.11}"
TORCH_SPEC=(torch==2.14.1 torchvision==0.29.1)
STAMP="$VENV/.dcinet_setup_stamp"
# Free space that the torch install needs, in KiB: 5.6 GB installed (measured: `du -sh .venv` is
# 6.0 GB with everything) plus a margin for pip's temporary files. Our choice.
TORCH_DISK_KB="${DCINET_TORCH_DISK_KB:-$((7 * 1024 * 1024))}"

step() { printf '\n[setup] %s\n' "$*"; }
fail() { printf '\n[setup] FAILED at step "%s": %s\n' "$CURRENT_STEP" "$*" >&2; exit 1; }
run_step() {
  CURRENT_STEP="$1"; shift
  step "$CURRENT_STEP"
  "$@" || fail "command exited with status $?: $*"
}

# The stamp records the inputs of the last successful run; when they are unchanged and the
# imports still work, nothing is reinstalled.
inputs_hash() {
  cat "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" "$ROOT/tools/install_detectron2.py" | sha256sum | cut -d' ' -f1
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] \
   && "$VENV/bin/python" -c "import torch, torchvision, detectron2, dcinet_d2" 2>/dev/null; then
  echo "[setup] environment at $VENV is up to date (delete $STAMP to force a re-check)"
  exit 0
fi

CURRENT_STEP="find Python 3.11"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || fail "$PYTHON_BIN not found on PATH; install Python 3.11 or set PYTHON=/path/to/python3.11"
"$PYTHON_BIN" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || fail "$PYTHON_BIN is not Python 3.11"

if [ ! -x "$VENV/bin/python" ]; then
  run_step "create virtual environment $VENV" "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

if ! "$PY" -c "import torch, torchvision; assert torch.__version__.startswith('2.14.1') and torchvision.__version__.startswith('0.29.1')" 2>/dev/null; then
  # PyPI's torch 2.14.1 for x86_64 is a CUDA build: about 5.6 GB once installed. Check the disk
  # first, so a full disk is named as such rather than as pip's OSError halfway through.
  CURRENT_STEP="check free disk space for torch"
  free_kb="$(df -Pk "$VENV" | awk 'NR == 2 {print $4}')"
  [ "$free_kb" -ge "$TORCH_DISK_KB" ] \
    || fail "$(( free_kb / 1024 / 1024 )) GB free on the disk of $VENV; installing torch needs about $(( TORCH_DISK_KB / 1024 / 1024 )) GB (free space, or set DCINET_VENV to a folder on a larger disk)"
  run_step "install ${TORCH_SPEC[*]} (several GB the first time)" "${PIP[@]}" install "${TORCH_SPEC[@]}"
fi
CURRENT_STEP="check torchvision ops"
"$PY" -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1,4), torch.zeros(1), 0.5)" \
  || fail "torchvision imports but its ops do not load: torch and torchvision versions do not match"

run_step "install build/runtime helpers (setuptools<81, wheel)" "${PIP[@]}" install "setuptools<81" wheel

if "$PY" -c "import detectron2" 2>/dev/null; then
  step "detectron2 already importable: left as it is ($("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))'))"
else
  run_step "build detectron2 from PyPI's pb1-detectron2==0.6 (pure Python, upstream fixes applied)" \
    "$PY" "$ROOT/tools/install_detectron2.py"
fi

run_step "install dcinet_d2 (editable, with dev extra)" "${PIP[@]}" install --no-build-isolation -e "$ROOT[dev]"

run_step "check imports" "$PY" -c "import torch, torchvision, detectron2, detectron2.engine, detectron2.data, dcinet_d2; print('torch', torch.__version__, '| detectron2', detectron2.__version__, '| dcinet_d2 OK')"

inputs_hash > "$STAMP"
step "done: activate with 'source $VENV/bin/activate'"
