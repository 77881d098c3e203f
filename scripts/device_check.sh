#!/usr/bin/env bash
# The accelerator check in one command (see scripts/device_check.py):
#
#   scripts/device_check.sh [--out=DIR] [--budget=SECONDS] [--peak_flops=F] [--tiny]
#
# Writes under experiments/accelerator/ (or --out). Needs Python with JAX,
# flax, optax, orbax-checkpoint, numpy, absl-py, scikit-learn; no TensorFlow,
# no network. ml-collections, which the configs use, is imported from the
# wheel in third_party/ when it is not installed (a pure-Python wheel is a zip
# that Python imports from directly: nothing is installed). For the
# Fashion-MNIST phase set SAM_JAX_FASHION_MNIST_DIR to the IDX files
# (experiments/accelerator/README.md). --tiny (or SAM_JAX_DEVICE_CHECK_TINY=1):
# a CPU smoke run of every phase, about a minute.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python" -c "import ml_collections" 2>/dev/null; then
  wheel="$repo/third_party/ml_collections-1.1.0-py3-none-any.whl"
  echo "device_check: ml_collections not installed; importing it from $wheel"
  export PYTHONPATH="$PYTHONPATH:$wheel"
fi
exec "$python" -u "$repo/scripts/device_check.py" "$@"
