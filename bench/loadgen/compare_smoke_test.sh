#!/usr/bin/env bash
# Smoke run of the side-by-side comparison with tiny sizes: the load
# generator, every adapter whose server is installed (Weir always; Redis,
# beanstalkd, NATS and RabbitMQ when redis-server, beanstalkd, nats-server and
# rabbitmq-server are on PATH), the harness, its report and (with gnuplot) its
# chart still work, also with --ack-with-receive.
# Usage: compare_smoke_test.sh BENCH_COMPARE LOADGEN WEIR_SERVER
set -euo pipefail

compare="$1" loadgen="$2" server="$3"
out="${TEST_TMPDIR:-$(mktemp -d)}"
export TMPDIR="$out"

python3 "$compare" --loadgen "$loadgen" --weir-server "$server" \
  --profile smoke --tiers sync,relaxed --skip-missing \
  --doc "$out/benchmarks.md" --img-dir "$out/img" \
  --command "smoke" >"$out/report.txt"

grep -q "bench-compare:begin" "$out/benchmarks.md"
grep -q "^| Weir | sync" "$out/report.txt"
grep -q "^| Weir | relaxed" "$out/report.txt"
for system in redis-server:"Redis Streams" beanstalkd:beanstalkd \
  nats-server:"NATS JetStream" rabbitmq-server:RabbitMQ; do
  binary="${system%%:*}"
  if command -v "$binary" >/dev/null; then
    grep -q "^| ${system#*:} | sync" "$out/report.txt"
  fi
done
if command -v gnuplot >/dev/null; then
  test -s "$out/img/bench-compare.png"
fi

# Every adapter's DeleteAndReceive (consumers acknowledging in the next
# receive), sync tier only; RabbitMQ keeps the default path and sits out.
python3 "$compare" --loadgen "$loadgen" --weir-server "$server" \
  --profile smoke --tiers sync --skip-missing --ack-with-receive \
  --systems weir,weir-stream,redis,beanstalkd,nats \
  --results "$out/ack.jsonl" --command "smoke ack" >"$out/ack.txt"
python3 - "$out/ack.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
consumed = [r for r in rows if r["workload"] != "ingest"]
assert consumed, "no consuming runs"
for r in consumed:
    assert r["ack_with_receive"], r
    assert r["errors"] == 0 and r["lost"] == 0, r
    assert r["consumed"] > 0, r
PY
grep -q "^| Weir | sync" "$out/ack.txt"

# Whether a workload applies is the load generator's to say: RabbitMQ never
# lets a lease lapse by itself, so it has no redelivery run.
"$loadgen" --system weir --workload redelivery --check
status=0
"$loadgen" --system rabbitmq --workload redelivery --check 2>"$out/check.txt" ||
  status=$?
test "$status" -eq 2
grep -q "does not apply" "$out/check.txt"

# --scenarios runs only those named; --weir-connections has Weir's clients
# share connections.
python3 "$compare" --loadgen "$loadgen" --weir-server "$server" \
  --profile smoke --tiers sync --systems weir,weir-stream \
  --scenarios ingest,drain --weir-connections 2 \
  --results "$out/some.jsonl" --command "smoke some" >"$out/some.txt"
python3 - "$out/some.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
labels = sorted((r["system"], r["label"]) for r in rows)
assert labels == [("weir", "drain"), ("weir", "ingest"),
                  ("weir-stream", "drain"), ("weir-stream", "ingest")], labels
for r in rows:
    assert r["connections"] == 2, r
    assert r["errors"] == 0 and r["lost"] == 0, r
PY
grep -q "2 shared connections" "$out/some.txt"
status=0
"$loadgen" --system redis --connections 2 --workload ingest --check \
  2>"$out/check.txt" || status=$?
test "$status" -eq 64
grep -q "for Weir only" "$out/check.txt"
echo "compare smoke: OK"
