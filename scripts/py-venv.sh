#!/usr/bin/env bash
# Makes sure target/py-venv exists and can import the given modules,
# installing the given requirements from PyPI when it cannot. Shared by the
# SDK smoke test and the compatibility suite, which reuse one venv.
#   scripts/py-venv.sh "openai, yaml" "openai>=1.60,<3" "pyyaml>=6,<7"
set -euo pipefail
cd "$(dirname "$0")/.."
modules=$1
shift
venv=target/py-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import $modules" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
fi
