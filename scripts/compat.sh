#!/usr/bin/env bash
# The compatibility suite: real clients against the real sluice binary, in two
# upstream modes.
#
#   mock     the built-in mock provider (scripts/sdk-smoke.sh covers the
#            Python SDK, its Azure client and the spec check on it)
#   spelled  a `provider = "openai"` deployment on tests/python/spelled_upstream.py,
#            which writes `data:` without a space, CRLF, `: keep-alive`
#            comments, json.dumps spacing and events split across writes
#
# Clients: the openai Python SDK (spelled mode here), the openai npm package on
# Node (tests/node/compat.cjs), the Vercel AI SDK (tests/node/vercel_ai.cjs),
# Anthropic's TypeScript SDK on /v1/messages (tests/node/anthropic.cjs),
# langchain-openai, the litellm SDK, instructor, the OpenAI Agents SDK with a
# Conversations session and pydantic-ai with count_tokens_before_request
# (tests/python/agents_compat.py), and the openai SDK's Realtime helper: to
# the mock in mock mode, to a fake Realtime upstream written with the
# `websockets` package in spelled mode. In the spelled run, /metrics must
# show every token the upstream reported, metered for its deployment. Python
# packages go into target/py-venv (and target/py-venv-agents, whose openai 3
# the others' pins exclude), the npm packages into target/node-compat (from
# tests/node/package-lock.json); all are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/py-venv
scripts/py-venv.sh "openai, langchain_openai, litellm, instructor" \
  "openai>=1.60,<3" "langchain-openai>=1.1,<2" "litellm>=1.80,<2" "instructor>=1.17,<2"
agents_venv=target/py-venv-agents
PY_VENV=$agents_venv scripts/py-venv.sh "agents, pydantic_ai.models.openai, websockets" \
  "openai-agents>=0.24,<1" "pydantic-ai-slim[openai]>=2.78,<3" "websockets>=15,<16" "openai>=3.50,<4"

node_dir=target/node-compat
if ! cmp -s tests/node/package-lock.json "$node_dir/package-lock.json" ||
  [ ! -d "$node_dir/node_modules/openai" ] || [ ! -d "$node_dir/node_modules/ai" ] ||
  [ ! -d "$node_dir/node_modules/@anthropic-ai/sdk" ]; then
  mkdir -p "$node_dir"
  cp tests/node/package.json tests/node/package-lock.json "$node_dir/"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo build --quiet --bin sluice
sluice_bin="${CARGO_TARGET_DIR:-target}/debug/sluice"

work=$(mktemp -d)
pids=()
# Stops every process, waiting for each to exit: a gateway drains on SIGTERM
# and writes its stores (SQLite checkpoints, job files) on the way out, so
# removing its data directory before it is gone races those writes.
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Polls with a deadline until FILE exists or URL answers.
wait_for() {
  local what=$1 deadline=$((SECONDS + 20))
  until eval "$what"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "timed out waiting for: $what" >&2
      return 1
    fi
    sleep 0.05
  done
}

python3 tests/python/spelled_upstream.py "$work/upstream.port" 2>"$work/upstream.log" &
pids+=($!)
wait_for "[ -s '$work/upstream.port' ]"
upstream="http://127.0.0.1:$(cat "$work/upstream.port")"
"$agents_venv/bin/python" tests/python/realtime_upstream.py "$work/realtime.port" sk-upstream-realtime \
  2>"$work/realtime-upstream.log" &
pids+=($!)
wait_for "[ -s '$work/realtime.port' ]"
realtime_upstream="http://127.0.0.1:$(cat "$work/realtime.port")/v1"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_sluice MODE: writes $work/MODE.toml, starts sluice on it, sets $url.
start_sluice() {
  local mode=$1 port
  port=$(free_port)
  local deployment realtime
  if [ "$mode" = mock ]; then
    deployment='provider = "mock"
mock = { latency = "1ms", chunks = 5, chunk_interval = "1ms" }'
    realtime='models = ["gpt-4o-mini", "text-embedding-3-small", "gpt-realtime"]'
  else
    deployment="provider = \"openai\"
base_url = \"$upstream/v1\"
api_key = \"sk-upstream-spelled\""
    realtime="models = [\"gpt-4o-mini\", \"text-embedding-3-small\"]
[[deployments]]
name = \"realtime-fake\"
provider = \"openai\"
base_url = \"$realtime_upstream\"
api_key = \"sk-upstream-realtime\"
models = [\"gpt-realtime\"]"
  fi
  mkdir -p "$work/$mode-data"
  cat >"$work/$mode.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[usage]
data_dir = "$work/$mode-data"
[[deployments]]
name = "$mode"
$deployment
$realtime
[[keys]]
name = "compat"
key = "sk-smoke-key-0001"
[[keys]]
name = "limited"
key = "sk-smoke-limited-01"
rpm = 60
[[keys]]
name = "other"
key = "sk-smoke-other-0002"
TOML
  "$sluice_bin" --config "$work/$mode.toml" >"$work/$mode.log" 2>&1 &
  pids+=($!)
  url="http://127.0.0.1:$port"
  wait_for "curl -fsS '$url/healthz' >/dev/null 2>&1"
}

failed=0
run() {
  echo "== $*"
  "$@" || failed=1
}

export LITELLM_LOCAL_MODEL_COST_MAP=True
export NODE_PATH="$PWD/$node_dir/node_modules"
py="$venv/bin/python"
for mode in mock spelled; do
  start_sluice "$mode"
  echo "=== $mode upstream: sluice at $url"
  if [ "$mode" = spelled ]; then
    run "$py" tests/python/sdk_smoke.py "$url/v1" sk-smoke-key-0001 spelled
  fi
  run node tests/node/compat.cjs "$url/v1" sk-smoke-key-0001 "$mode"
  run node tests/node/vercel_ai.cjs "$url/v1" sk-smoke-key-0001 "$mode"
  # Anthropic's TypeScript SDK on /v1/messages, onto this upstream.
  run node tests/node/anthropic.cjs "$url/v1" sk-smoke-key-0001
  if [ "$mode" = mock ]; then
    # Structured extraction needs a model's answers: the mock's, not the
    # spelled upstream's canned text.
    run "$py" tests/python/instructor_compat.py "$url/v1" sk-smoke-key-0001
  fi
  run "$agents_venv/bin/python" tests/python/agents_compat.py "$url/v1" sk-smoke-key-0001 sk-smoke-other-0002 "$mode"
  run "$py" tests/python/langchain_compat.py "$url/v1" sk-smoke-key-0001 "$mode"
  run "$py" tests/python/litellm_compat.py "$url/v1" sk-smoke-key-0001 "$mode"
  if [ "$mode" = spelled ]; then
    run "$py" tests/python/metered_check.py "$url" "$upstream/stats" spelled sk-smoke-key-0001
  fi
done

if [ $failed -ne 0 ]; then
  echo "compatibility suite: failures above (gateway logs follow)"
  tail -n 20 "$work"/*.log
  exit 1
fi
echo "compatibility suite passed"
