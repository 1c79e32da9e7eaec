#!/usr/bin/env bash
# Creates .venv (if missing) and installs Sweeper with the pinned, tested versions (constraints.txt).
# Idempotent: re-running after an unchanged pyproject.toml/constraints.txt costs about a second.
#
#   bash scripts/bootstrap.sh          the package and its test extra, for `sweeper demo` and friends
#   bash scripts/bootstrap.sh --test   also Debian's chromium + chromium-driver (apt), which the browser
#                                      tests drive through Selenium; skipped when both are present
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
with_browser=0
for arg in "$@"; do
    case "$arg" in
        --test) with_browser=1 ;;
        *) echo "bootstrap.sh: unknown argument '$arg' (known: --test)" >&2; exit 2 ;;
    esac
done

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

if [ "$with_browser" = 1 ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "bootstrap.sh: installing Debian's chromium and chromium-driver for the browser tests"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
