#!/usr/bin/env sh
# Install what the tests need, then run the whole suite. Used by CI (.ci/run).
set -eu
cd "$(dirname "$0")/.."

# The Python side: one virtual environment inside the checkout.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[examples,test]"
.venv/bin/pip check

# The browser the UI tests drive: Debian's Chromium (never a downloaded one).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
        echo "UI tests need Debian's chromium: sudo apt-get install chromium" >&2
        exit 1
    fi
fi

.venv/bin/ruff check kdag tests
.venv/bin/ruff format --check kdag tests
.venv/bin/mypy
.venv/bin/pytest "$@"
