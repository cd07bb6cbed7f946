#!/usr/bin/env bash
# Coverage-guided fuzzing on stable Rust with AFL++ through cargo-afl (from
# crates.io; it builds AFL++ when installed). Builds the harness in
# tests/fuzz/afl/ (release, with overflow checks and debug assertions) and
# fuzzes each target for SECONDS, starting from tests/fuzz/corpus/<target>/.
#
#   tests/fuzz/afl.sh SECONDS [TARGET...]     (default: every target)
#
# Findings land in target/afl/<target>/default/crashes/; replay one with
#   SPATE_FUZZ_REPLAY=target/afl/<target>/default/crashes/id:... \
#       cargo nextest run --test fuzzing
# and add it to the corpus once fixed. New coverage AFL found is in
# target/afl/<target>/default/queue/ (minimise with `cargo afl cmin` before
# adding any to the corpus: keep the corpus small).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

seconds=${1:-60}
shift || true
if (($# == 0)); then
    set -- smtp_command smtp_session imap_command pop3_session spool_record mime_message
fi

command -v cargo-afl >/dev/null 2>&1 || cargo install cargo-afl --locked
export CARGO_TARGET_DIR=target/afl-build
cargo afl build --release --manifest-path tests/fuzz/afl/Cargo.toml

# No UI on a pipe; a container's core_pattern and CPU governor are not ours
# to change.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
status=0
for target in "$@"; do
    out=target/afl/$target
    mkdir -p "$out"
    # -V: stop after SECONDS; -i -: resume when a previous run left a queue.
    input=tests/fuzz/corpus/$target
    [[ -d $out/default/queue ]] && input=-
    cargo afl fuzz -V "$seconds" -i "$input" -o "$out" -- \
        "$CARGO_TARGET_DIR/release/spate-afl" "$target" >"$out/log.txt" 2>&1 || status=$?
    crashes=$(find "$out/default/crashes" -type f -name 'id:*' 2>/dev/null | wc -l)
    execs=$(awk -F: '/^execs_done/ {gsub(/ /, "", $2); print $2}' "$out/default/fuzzer_stats" 2>/dev/null || echo '?')
    echo "afl $target: $execs executions in $seconds s, $crashes crashes (log: $out/log.txt)"
    ((crashes == 0)) || status=1
done
exit "$status"
