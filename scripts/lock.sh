#!/usr/bin/env bash
# Write requirements/dev.lock from the environment in ./.venv: the exact versions installed
# there (the set the suite just passed with), with every file's hash, resolved by uv.
#
# Refresh the lock: scripts/setup.sh --latest && .venv/bin/python -m pytest && scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DQAUDIT_VENV:-.venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" -m pip --disable-pip-version-check freeze --exclude-editable \
    | grep -v '^dqaudit' > "$tmp/tested.txt"
if ! command -v uv >/dev/null; then
    "$VENV/bin/python" -m pip --disable-pip-version-check install -q uv
    UV="$VENV/bin/uv"
else
    UV=uv
fi
pyver=$("$VENV/bin/python" -c 'import platform; print(platform.python_version())')
"$UV" pip compile pyproject.toml --extra dev --constraint "$tmp/tested.txt" --generate-hashes \
    --python-version "$pyver" --python-platform x86_64-manylinux_2_28 --no-header \
    --no-annotate --quiet -o "$tmp/dev.lock"
{
    echo "# The development and CI environment, exact and hashed: what scripts/setup.sh installs."
    echo "# Written by scripts/lock.sh from a venv the whole suite passed in (CPython $pyver,"
    echo "# Linux x86_64). Refresh: scripts/setup.sh --latest && .venv/bin/python -m pytest &&"
    echo "# scripts/lock.sh"
    cat "$tmp/dev.lock"
} > requirements/dev.lock
echo "lock: wrote requirements/dev.lock ($(grep -c '==' requirements/dev.lock) packages)"
