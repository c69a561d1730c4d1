#!/usr/bin/env bash
# Run the whole suite against the newest releases pyproject.toml allows, in a venv of its own
# (.venv-latest), so that a new release that breaks dqaudit is found here before a user finds it.
# Prints what differs from requirements/dev.lock. Exit status: the suite's.
set -euo pipefail
cd "$(dirname "$0")/.."
export DQAUDIT_VENV=${DQAUDIT_VENV:-.venv-latest}
bash scripts/setup.sh --latest
echo "check_latest: versions that differ from requirements/dev.lock (lock -> latest):"
"$DQAUDIT_VENV/bin/python" - <<'PY'
import re, subprocess, sys, os

def pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out

locked = pins(open("requirements/dev.lock").read().splitlines())
venv = os.environ["DQAUDIT_VENV"]
frozen = subprocess.run([f"{venv}/bin/python", "-m", "pip", "--disable-pip-version-check",
                         "freeze", "--exclude-editable"], capture_output=True, text=True).stdout
latest = pins(frozen.splitlines())
tools = {"pip", "setuptools", "wheel"}  # pip freeze leaves these out
changed = [f"  {n}: {locked.get(n, '-')} -> {latest.get(n, '-')}"
           for n in sorted((set(locked) | set(latest)) - tools) if locked.get(n) != latest.get(n)]
print("\n".join(changed) or "  (none)")
PY
"$DQAUDIT_VENV/bin/python" -m pytest "$@"
