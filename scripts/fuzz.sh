#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of every decoder of untrusted bytes.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh            # every target, 600 s each, two at a time
#   scripts/fuzz.sh 60 frames  # one target for 60 s
#
# Logs go to fuzz/logs/<target>.log; a crash leaves its input in fuzz/artifacts/<target>/ —
# turn it into a named regression test (see docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_bodies frames payloads server_mls client_entries)
fi
cargo +nightly fuzz build -s none
mkdir -p logs
run() {
    local target="$1"
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run -s none "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
        >"logs/$target.log" 2>&1
    local status=$?
    printf '%-16s exit %s  %s\n' "$target" "$status" \
        "$(grep -E '^stat::number_of_executed_units' "logs/$target.log" | awk '{print $2 " runs"}')"
    return "$status"
}
failed=0
# Two at a time: one per core.
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    run "${targets[i]}" &
    first=$!
    second=""
    if [ $((i + 1)) -lt ${#targets[@]} ]; then
        run "${targets[i + 1]}" &
        second=$!
    fi
    wait "$first" || failed=1
    if [ -n "$second" ]; then wait "$second" || failed=1; fi
done
exit "$failed"
