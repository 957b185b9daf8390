#!/usr/bin/env bash
# The admin console in a real browser: Debian's Chromium (installed by
# scripts/ensure-deps.sh) driven by playwright-core from npm
# (tests/browser, installed into target/browser on first use, from its
# lock file), against the binary on the mock provider and on a fake OpenAI
# upstream the test switches off and on (tests/browser/upstream.cjs). With SCREENSHOTS=DIR
# it saves the pages there (the README's pictures).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/browser
if ! cmp -s tests/browser/package-lock.json "$dir/package-lock.json" ||
  [ ! -d "$dir/node_modules/playwright-core" ]; then
  mkdir -p "$dir"
  cp tests/browser/package.json tests/browser/package-lock.json "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo build --quiet --bin sluice
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
upstream_port=$(free_port)
work=$(mktemp -d)
token=console-admin-token-0123
cat > "$work/sluice.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[usage]
data_dir = "$work/data"
[admin]
token = "$token"
keys_store = "sqlite"
[[deployments]]
name = "mock"
provider = "mock"
models = ["gpt-4o-mini"]
mock = { latency = "1ms" }
[batch]
store = "sqlite"
files_dir = "$work/files"
poll_interval = "200ms"
lease = "3s"
[circuit_breaker]
failure_threshold = 2
recovery_timeout = "8s"
success_threshold = 1
[retry]
max_attempts = 1
[[deployments]]
name = "flaky"
provider = "openai"
base_url = "http://127.0.0.1:$upstream_port/v1"
api_key = "sk-upstream-console"
models = ["gpt-4o"]
[[keys]]
name = "app"
key = "sk-console-app-0001"
budget_daily_usd = 1.0
TOML
"${CARGO_TARGET_DIR:-target}/debug/sluice" --config "$work/sluice.toml" >"$work/sluice.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
NODE_PATH="$PWD/$dir/node_modules" node tests/browser/console.cjs \
  "http://127.0.0.1:$port" "$token" sk-console-app-0001 "$work/sluice.toml" "$upstream_port" \
  ${SCREENSHOTS:+"$SCREENSHOTS"}
