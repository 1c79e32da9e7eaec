#!/usr/bin/env bash
# Creates .venv (if missing) and installs Sweeper with the pinned, tested versions (constraints.txt).
# Idempotent: re-running after an unchanged pyproject.toml/constraints.txt costs about a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=".venv/.sweeper-installed"
want="$(cat pyproject.toml constraints.txt | sha1sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[test]"
    echo "$want" > "$stamp"
fi
