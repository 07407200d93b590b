#!/usr/bin/env bash
# Fuzzes soup-core: runs every cargo-fuzz target of fuzz/ for SECONDS each,
# one after the other, on one core (libFuzzer, nightly Rust, debug
# assertions on, so an arithmetic overflow is a finding too).
#
#   scripts/fuzz.sh SECONDS [TARGET ...]     (default: every target)
#
# Targets (fuzz/fuzz_targets/, harness in fuzz/src/harness.rs): `header`
# (the header parser), `open` (a checkpoint from bytes: one file, or an index
# with shards written to a folder), `merge` (check-mask plus merge of two
# mutated files). Each starts from the committed seeds (fuzz/corpus/TARGET,
# read only) and the inputs kept by earlier runs (fuzz/target/work/TARGET);
# new inputs go to the latter, so the committed corpus stays small.
# A crash or a failed check is saved as fuzz/artifacts/TARGET/crash-*
# (replay: cargo +nightly fuzz run -O -a TARGET FILE).
#
# Prints one table row per target: seconds, executions, executions per
# second, findings. Exit status 1 if any target found something.
# Needs the nightly toolchain and cargo-fuzz; both are installed on first
# use (rustup toolchain install nightly; cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET ...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(header open merge)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal >&2
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked >&2
cargo +nightly fuzz build -O -a >&2

# The open and merge targets write their inputs to files: keep them in
# memory when there is a tmpfs.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi

echo "| target | seconds | executions | exec/s | findings |"
echo "|---|---:|---:|---:|---:|"
found=0
for t in "${targets[@]}"; do
    work=target/work/$t
    mkdir -p "$work" "artifacts/$t"
    log=target/work/$t.log
    before=$(find "artifacts/$t" -type f | wc -l)
    status=0
    # -timeout: an input that takes 10 s is a hang, and a finding.
    cargo +nightly fuzz run -O -a "$t" "$work" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    findings=$(($(find "artifacts/$t" -type f | wc -l) - before))
    if [ "$status" != 0 ] || [ "$findings" -gt 0 ]; then
        found=1
        echo "$t: finding (exit $status), see fuzz/$log and fuzz/artifacts/$t/" >&2
        grep -m 5 -E 'panicked|ERROR|SUMMARY' "$log" >&2 || true
    fi
    secs=${secs:-$seconds}
    echo "| $t | $secs | ${runs:-0} | $(( ${runs:-0} / (secs > 0 ? secs : 1) )) | $findings |"
done
exit "$found"
