#!/usr/bin/env bash
# Installs what the benchmarks use besides the project: Debian's nginx (as
# the reverse proxy Sluice is compared with, and as the fixed-answer
# upstream of `cargo bench --bench proxy`), wrk (the load generator) and
# perf (system calls by kind, and the profile).
set -euo pipefail
missing=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ -x /usr/bin/perf ] || missing+=(linux-perf)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
