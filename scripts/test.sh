#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need on first use
# (scripts/setup.sh --full: the Python references the tests compare against
# need the complete PyTorch install), then builds and tests every crate of
# the workspace, runs the short crash test and the Python package's tests.
#
# One failure hides nothing: every cargo test binary runs even after
# another failed (--no-fail-fast), and every stage runs even after an
# earlier one failed. The script exits non-zero if any stage failed, and
# names the failed stages at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh --full)"
# Tests that need Python (interoperability, parity with PyTorch) fail rather
# than skip when this is set.
export SOUP_REQUIRE_PYTHON=1
failed=()
# Runs one stage; records its name if it fails, and goes on.
stage() {
    local name=$1
    shift
    if ! "$@"; then
        failed+=("$name")
        printf 'test.sh: stage failed: %s\n' "$name" >&2
    fi
}
# End-to-end tests drive the built binaries: build them first. Nothing can
# be tested without them, so a failed build stops here.
cargo build --workspace --release --locked --bins
stage "cargo test" cargo test --workspace --release --locked --no-fail-fast "$@"
# Crash test, short version: SIGKILLs merge, prune, edit and shard 12 times
# and checks outputs, inputs and temp files (scripts/crash-test.sh 100 is
# the full run recorded in BENCHMARKS.md).
stage "crash test" scripts/crash-test.sh --short
# The Python package (python/): build and install it into the same
# environment, then run its tests, which compare it with the soup binary
# built above. (--force-reinstall: a checkout with the same version number
# installed earlier is rebuilt from the current sources; numpy, its only
# dependency, is already there.)
python_tests() {
    "$SOUP_PYTHON" -m pip install --quiet pytest &&
        "$SOUP_PYTHON" -m pip install --quiet --force-reinstall --no-deps ./python &&
        "$SOUP_PYTHON" -m pytest -q python/tests
}
stage "python tests" python_tests
if [ ${#failed[@]} -gt 0 ]; then
    printf 'test.sh: FAILED stages: %s\n' "${failed[*]}" >&2
    exit 1
fi
printf 'test.sh: all stages passed\n' >&2
