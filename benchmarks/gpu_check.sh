#!/usr/bin/env bash
# One command for a GPU machine: installs the carried wheels when a package is missing, then runs
# benchmarks/gpu_check.py (every figure a rate or a ratio; at most 8 minutes). See benchmarks/README.md, "GPU check".
#
#   bash benchmarks/gpu_check.sh                                  # on the GPU machine
#   PYTHON=.venv/bin/python nice -n 10 bash benchmarks/gpu_check.sh --device cpu --tiny   # dry run here
#
# PYTHON: the interpreter (default: the repository's .venv when there is one, else python3).
# GPU_CHECK_TIMEOUT: hard stop in seconds (default 470, none with --device cpu; the run budgets 440). With $OUT set (the device tool), the log is
# also written to $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
wheels=.gpu-wheels
site="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/sweeper-gpu-site}"
needed="import segmentation_models_pytorch, albumentations, pydicom, nibabel"

if ! "$PYTHON" -c "$needed" 2>/dev/null; then
  if compgen -G "$wheels/*.whl" >/dev/null; then
    echo "installing the carried wheels ($wheels, $(ls $wheels/*.whl | wc -l) files) into $site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$wheels"/*.whl || echo "pip could not install the wheels from $wheels"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "missing packages and no $wheels/ folder: run 'bash benchmarks/gpu_wheels.sh' where pip reaches PyPI, and carry .gpu-wheels"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
log=/dev/null
if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then log="$OUT/gpu_check.log"; fi
# a hard stop on the device (a dry run with --device cpu has none unless GPU_CHECK_TIMEOUT is set)
limit="${GPU_CHECK_TIMEOUT:-}"
if [[ -z "$limit" ]]; then
  if [[ " $* " == *" --device cpu "* ]]; then limit=0; else limit=470; fi
fi
stop=()
if [[ "$limit" != 0 ]] && command -v timeout >/dev/null; then stop=(timeout -k 10 "$limit"); fi
"${stop[@]}" "$PYTHON" benchmarks/gpu_check.py "$@" 2>&1 | tee "$log"
status=$?
if [[ $status -eq 124 ]]; then echo "gpu_check stopped at its $limit s limit"; fi
exit $status
