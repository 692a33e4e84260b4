#!/usr/bin/env bash
# The GPU check on a lent machine, as one command for the device tool (issue 15):
#
#   run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=540)
#
# The GPU image has torch, triton, scikit-learn, pandas, pytest, pybind11 and cmake but no
# package registry: wheels it lacks travel in .whl/ (gitignored), fetched here beforehand with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl mnist1d
# (mnist1d: the MNIST-1D rows of the precision part; without it those rows are skipped).
# The record (JSON + Markdown) goes to $OUT, which the device tool brings back.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# The C++ extension builds if it can (MASC_FAST_BUILD_EXT=auto); the check says whether it did.
python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -n 3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "${OUT:-bench/results}" "$@"
