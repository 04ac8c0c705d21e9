#!/usr/bin/env bash
# Runs one fuzz target for a bounded time: run_fuzzer.sh BINARY SEED_DIR SECONDS
#
# Under --config=fuzz BINARY is a libFuzzer binary: it fuzzes for SECONDS
# (WEIR_FUZZ_SECONDS overrides, for a longer run), starting from SEED_DIR;
# new inputs go to a scratch corpus, a crashing input to the test's
# undeclared outputs (bazel-testlogs/.../test.outputs/). In other builds
# BINARY replays SEED_DIR once.
set -euo pipefail
binary="$1"
seeds="$2"
seconds="${WEIR_FUZZ_SECONDS:-$3}"
scratch="${TEST_TMPDIR:-$(mktemp -d)}/corpus"
artifacts="${TEST_UNDECLARED_OUTPUTS_DIR:-${TEST_TMPDIR:-/tmp}}"
mkdir -p "$scratch" "$artifacts"
exec "$binary" \
  -max_total_time="$seconds" \
  -timeout=25 \
  -rss_limit_mb=4096 \
  -print_final_stats=1 \
  -artifact_prefix="$artifacts/" \
  "$scratch" "$seeds"
