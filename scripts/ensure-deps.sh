#!/usr/bin/env bash
# Installs and starts what the test suite needs beyond the Rust toolchain:
# redis-server (the Redis tests start private instances on free ports),
# PostgreSQL at 127.0.0.1:5432 with trust auth (the usage-ledger tests),
# Python's venv module (the official OpenAI SDK smoke test) and curl.
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  config=/etc/postgresql/$version/main
  # Local connections from the tests use trust auth, as on the CI machines.
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$config/pg_hba.conf"; then
    echo "host all all 127.0.0.1/32 trust" | $sudo tee -a "$config/pg_hba.conf" >/dev/null
  fi
  $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 50); do
    pg_isready -h 127.0.0.1 -p 5432 -q && break
    sleep 0.2
  done
fi
