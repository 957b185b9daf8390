#!/usr/bin/env bash
# Installs what the benchmarks compare against: Debian's nginx, run by
# `cargo bench --bench proxy` as a plain reverse proxy (the practical limit).
set -euo pipefail
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends nginx-light
