#!/usr/bin/env bash
# The soak benchmark in 15 seconds (samples every 2, a light rate): the
# harness starts the server, samples it, drains the queue and finds nothing
# lost, and the CSV has a row per sample.
set -euo pipefail
out="${TEST_UNDECLARED_OUTPUTS_DIR:-${TEST_TMPDIR:-/tmp}}/soak.csv"
log="${TEST_TMPDIR:-/tmp}/soak.log"
"$1" --duration=15s --sample_interval=2s --rate=200 --producers=2 \
  --consumers=2 --keep_deleted=2s --drain_timeout=20s --out="$out" |
  tee "$log"
grep -q "nothing acknowledged was lost" "$log"
grep -q "^elapsed_s,rss_bytes,disk_bytes," "$out"
rows=$(($(wc -l <"$out") - 1))
if ((rows < 8)); then
  echo "soak_smoke_test: $rows samples in $out, expected at least 8 (one every 2 s for 15 s)" >&2
  exit 1
fi
# Every sample saw the server: a resident set and a data directory.
awk -F, 'NR > 1 && ($2 <= 0 || $3 <= 0) { bad = 1 } END { exit bad }' "$out"
echo "soak_smoke_test: $rows samples, OK"
