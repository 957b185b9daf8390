#!/usr/bin/env bash
# Runs the official OpenAI Python SDK against the real sluice binary on a
# mock upstream (chat, streaming, the Azure client, files and batches), then
# validates the mock's answers against OpenAI's OpenAPI
# description (tests/python/spec_check.py), then checks that an app traced
# with the official OpenTelemetry SDK has its trace continued through the
# gateway (tests/python/otel_trace.py; the gateway exports to a receiver),
# then Anthropic's SDK on /v1/messages (tests/python/anthropic_messages.py),
# then both SDKs on a fake Anthropic deployment (tests/python/anthropic_relay.py).
# Installs the SDKs, jsonschema and PyYAML from PyPI into target/py-venv on
# first use.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/py-venv
scripts/py-venv.sh "openai, anthropic, jsonschema, yaml, opentelemetry.sdk, opentelemetry.proto, grpc, \
  opentelemetry.exporter.otlp.proto.http, opentelemetry.instrumentation.httpx" \
  "openai>=1.60,<3" "anthropic>=0.40,<3" "jsonschema>=4.18,<5" "pyyaml>=6,<7" \
  "opentelemetry-sdk>=1.30,<2" "opentelemetry-exporter-otlp-proto-http>=1.30,<2" \
  "opentelemetry-instrumentation-httpx" "opentelemetry-proto>=1.30,<2" "grpcio>=1.60,<2"
# The spec is kept in shared/reference beside the checkout, not in it.
spec=${OPENAI_OPENAPI_SPEC:-../shared/reference/openai-openapi.yaml}

cargo build --quiet --bin sluice
# The OTLP receiver the gateway and tests/python/otel_trace.py export to
# (tests/otlp/receiver.py): its stdin is a FIFO this script holds open, so
# it exits when the script does.
otlp_fifo=$(mktemp -u)
mkfifo "$otlp_fifo"
exec 3<>"$otlp_fifo"
otlp_ports=$(mktemp)
"$venv/bin/python" tests/otlp/receiver.py <"$otlp_fifo" >"$otlp_ports" &
otlp_pid=$!
for _ in $(seq 1 100); do
  [ -s "$otlp_ports" ] && break
  sleep 0.1
done
otlp_port=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["http"])' "$otlp_ports")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The fake Anthropic deployment tests/python/anthropic_relay.py serves.
fake_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
config=$(mktemp --suffix=.toml)
data_dir=$(mktemp -d)
log=$(mktemp --suffix=.log)
cat > "$config" <<TOML
[server]
listen = "127.0.0.1:$port"
[usage]
data_dir = "$data_dir"
[batch]
poll_interval = "100ms"
[[deployments]]
name = "mock"
provider = "mock"
models = ["gpt-4o-mini", "text-embedding-3-small", "omni-moderation-latest", "gpt-image-1", "tts-1", "whisper-1"]
mock = { latency = "1ms", chunks = 5, chunk_interval = "1ms" }
[[deployments]]
name = "claude-fake"
provider = "anthropic"
base_url = "http://127.0.0.1:$fake_port"
api_key = "sk-ant-fake"
models = ["claude-relay"]
[otel]
endpoint = "http://127.0.0.1:$otlp_port"
schedule_delay = "100ms"
[[keys]]
name = "smoke"
key = "sk-smoke-key-0001"
[[keys]]
name = "limited"
key = "sk-smoke-limited-01"
rpm = 60
[[keys]]
name = "once"
key = "sk-smoke-once-00001"
rpm = 1
TOML

"${CARGO_TARGET_DIR:-target}/debug/sluice" --config "$config" >"$log" 2>&1 &
pid=$!
# Waits for the gateway to exit before removing its data directory, which it
# writes while it drains.
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  kill "$otlp_pid" 2>/dev/null || true
  exec 3>&-
  rm -rf "$config" "$log" "$data_dir" "$otlp_fifo" "$otlp_ports"
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

"$venv/bin/python" tests/python/sdk_smoke.py "http://127.0.0.1:$port/v1" sk-smoke-key-0001
# The Azure client: /openai/deployments/..., /openai/responses, /openai/v1/...
"$venv/bin/python" tests/python/azure_smoke.py "http://127.0.0.1:$port" sk-smoke-key-0001
# Files and batches, run by sluice itself on the mock; the second key must
# not see the first key's.
"$venv/bin/python" tests/python/batch_smoke.py "http://127.0.0.1:$port/v1" sk-smoke-key-0001 sk-smoke-limited-01
"$venv/bin/python" tests/python/spec_check.py "http://127.0.0.1:$port/v1" sk-smoke-key-0001 "$spec"
# An app traced with the OpenTelemetry SDK: its trace goes on through sluice.
"$venv/bin/python" tests/python/otel_trace.py "http://127.0.0.1:$port/v1" sk-smoke-key-0001 "http://127.0.0.1:$otlp_port"

# Anthropic's Messages API, with the official anthropic SDK.
"$venv/bin/python" tests/python/anthropic_messages.py "http://127.0.0.1:$port" sk-smoke-key-0001 sk-smoke-once-00001
# Both SDKs on an Anthropic deployment: Messages relayed, chat translated.
"$venv/bin/python" tests/python/anthropic_relay.py "http://127.0.0.1:$port" sk-smoke-key-0001 "$fake_port" claude-relay

# Graceful shutdown on SIGTERM exits cleanly.
kill -TERM "$pid"
wait "$pid"
echo "sluice exited cleanly on SIGTERM"
