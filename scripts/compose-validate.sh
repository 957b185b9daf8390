#!/usr/bin/env bash
# Offline validation of the compose stack (docker/compose.yml, the files it
# mounts, config/examples/compose.toml): no Docker engine, no network once the
# venv exists. Checks are in scripts/compose_check.py; this provides jsonschema
# and PyYAML from PyPI in a venv kept across runs under
# ${XDG_CACHE_HOME:-$HOME/.cache}/sluice-compose-venv.
#   scripts/compose-validate.sh                     # one-line summary; problems on stderr
#   SLUICE_BIN=target/release/sluice scripts/compose-validate.sh   # also `sluice check` the config
# Exit status 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}
venv=$cache/sluice-compose-venv
requirements=("jsonschema>=4.18,<5" "pyyaml>=6,<7")
modules="jsonschema, yaml, tomllib"

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "compose-validate: FAILED, python3 3.11 or newer is needed (tomllib)" >&2
  exit 1
fi

python=$venv/bin/python
if ! "$python" -c "import $modules" 2>/dev/null; then
  mkdir -p "$cache"
  # A venv left by another Python (or half made) is made again.
  if ! "$python" -c 'pass' 2>/dev/null; then
    python3 -m venv --clear "$venv"
  fi
  if ! PIP_ROOT_USER_ACTION=ignore "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "${requirements[@]}" >&2; then
    if python3 -c "import $modules" 2>/dev/null; then
      echo "compose-validate: PyPI unreachable; using the system python3's jsonschema and yaml" >&2
      python=python3
    else
      echo "compose-validate: FAILED, cannot install ${requirements[*]} into $venv" >&2
      exit 1
    fi
  fi
fi

exec "$python" scripts/compose_check.py
