#!/usr/bin/env bash
# The project's test command: the Rust suite (unit + integration against a
# socket-level fake upstream, private Redis instances and async-openai), then
# the official OpenAI Python SDK against the real binary, then the
# compatibility suite (Node, langchain-openai, litellm; mock and spelled upstreams),
# the admin console in headless Chromium,
# and the deployment files: the compose stack and the Kubernetes manifests,
# validated offline against their schemas.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
python3 scripts/check_docs.py
scripts/compose-validate.sh
scripts/k8s-validate.sh
cargo test
scripts/sdk-smoke.sh
scripts/compat.sh
scripts/console-test.sh
