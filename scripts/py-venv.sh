#!/usr/bin/env bash
# Makes sure a venv (target/py-venv, or $PY_VENV) exists and can import the
# given modules, installing the given requirements from PyPI when it cannot.
# The SDK smoke test and the compatibility suite share target/py-venv;
# clients whose pins conflict with it (the Agents SDK and pydantic-ai want
# openai 3) get a venv of their own.
#   scripts/py-venv.sh "openai, yaml" "openai>=1.60,<3" "pyyaml>=6,<7"
set -euo pipefail
cd "$(dirname "$0")/.."
modules=$1
shift
venv=${PY_VENV:-target/py-venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import $modules" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "$@"
fi
