#!/usr/bin/env bash
# The project's test command: the Rust suite (unit + integration against a
# socket-level fake upstream and async-openai), then the official OpenAI
# Python SDK against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test
scripts/sdk-smoke.sh
