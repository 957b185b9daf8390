#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for N seconds each (default 30), one at a
# time, starting from the committed seeds in fuzz/corpus/<target>. With
# FUZZ_DEV=1 the targets are built unoptimised: a short run (CI's) spends
# less time building than an optimised build would save it in executions. Exits
# non-zero if any target finds a crash; the input is then in
# fuzz/artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run --sanitizer none <target> <file>`).
# New inputs found along the way go to a scratch corpus, so the committed
# one only changes by hand (`cargo +nightly fuzz cmin <target>`).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# No sanitizer: the gateway forbids unsafe code, and what is checked here
# (panics, overflow, assertions, timeouts, memory) needs none. That also
# lets the stable toolchain build the targets where nightly is missing.
flags=(--sanitizer none --release --debug-assertions)
if [[ "${FUZZ_DEV:-0}" == 1 ]]; then
    flags=(--sanitizer none --dev)
fi
fuzz() {
    if cargo +nightly --version >/dev/null 2>&1; then
        cargo +nightly fuzz "$@"
    else
        cargo fuzz "$@"
    fi
}
fuzz build "${flags[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
targets=$(fuzz list)
failed=()
for target in $targets; do
    mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
    log="$scratch/$target.log"
    # libFuzzer logs every new input; CI shows the totals, or the crash.
    if fuzz run "${flags[@]}" "$target" \
        "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=16384 -print_final_stats=1 >"$log" 2>&1; then
        echo "fuzz: $target: $(grep -m1 '^Done' "$log")"
    else
        tail -n 60 "$log"
        failed+=("$target")
    fi
done
total=$(wc -w <<<"$targets")
echo "fuzz: $((total - ${#failed[@]})) passed, ${#failed[@]} failed"
if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
