#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need on first use
# (scripts/setup.sh --full: the Python references the tests compare against
# need the complete PyTorch install), then builds and tests every crate of
# the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/setup.sh --full)"
# Tests that need Python (interoperability, parity with PyTorch) fail rather
# than skip when this is set.
export SOUP_REQUIRE_PYTHON=1
# End-to-end tests drive the built binaries: build them first.
cargo build --workspace --release --locked --bins
cargo test --workspace --release --locked "$@"
# Crash test, short version: SIGKILLs merge, prune, edit and shard 12 times
# and checks outputs, inputs and temp files (scripts/crash-test.sh 100 is
# the full run recorded in BENCHMARKS.md).
scripts/crash-test.sh --short
# The Python package (python/): build and install it into the same
# environment, then run its tests, which compare it with the soup binary
# built above. (--force-reinstall: a checkout with the same version number
# installed earlier is rebuilt from the current sources; numpy, its only
# dependency, is already there.)
"$SOUP_PYTHON" -m pip install --quiet pytest
"$SOUP_PYTHON" -m pip install --quiet --force-reinstall --no-deps ./python
"$SOUP_PYTHON" -m pytest -q python/tests
