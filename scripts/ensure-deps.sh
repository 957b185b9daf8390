#!/usr/bin/env bash
# Installs and starts what the test suite needs beyond the Rust toolchain:
# redis-server (the Redis tests start private instances on free ports),
# nginx (the fleet test puts three replicas behind it), util-linux's
# unshare and nsenter and iproute2's ip (the image test runs the binary in
# namespaces as the Dockerfile says),
# PostgreSQL at 127.0.0.1:5432 with trust auth (the usage-ledger tests),
# Python's venv module (the official OpenAI SDK smoke test) and curl,
# Chromium (the admin console's browser test), and
# a PostgreSQL with pgvector at 127.0.0.1:5433 (the semantic-cache store
# tests): Debian's mirror has no pgvector package, so this is the pgserver
# wheel from PyPI, which bundles PostgreSQL 16 with pgvector 0.6.
set -euo pipefail

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v ldd >/dev/null 2>&1 || missing+=(libc-bin)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
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

# PostgreSQL 16 + pgvector from the pgserver wheel, on port 5433, trust auth.
if ! pg_isready -h 127.0.0.1 -p 5433 -q 2>/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    pgvector_dir=/var/lib/postgresql/sluice-pgvector
    as_server() { runuser -u postgres -- "$@"; }
  else
    pgvector_dir=${XDG_CACHE_HOME:-$HOME/.cache}/sluice-pgvector
    as_server() { "$@"; }
  fi
  if [ ! -x "$pgvector_dir/venv/bin/python" ]; then
    python3 -m venv "$pgvector_dir/venv"
    "$pgvector_dir/venv/bin/pip" install -q --no-deps pgserver==0.1.4
  fi
  bin=$("$pgvector_dir/venv/bin/python" -c 'import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec("pgserver").origin), "pginstall", "bin"))')
  [ "$(id -u)" -ne 0 ] || chown -R postgres: "$pgvector_dir"
  if [ ! -f "$pgvector_dir/data/PG_VERSION" ]; then
    as_server "$bin/initdb" -D "$pgvector_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  as_server "$bin/pg_ctl" -D "$pgvector_dir/data" -l "$pgvector_dir/server.log" -w \
    -o "-p 5433 -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
fi
