#!/usr/bin/env bash
# grpc_floor still works: a server on a free port, then a short run of each
# client kind against it.
set -euo pipefail
floor="$1"
out="${TEST_TMPDIR:-$(mktemp -d)}/floor-server.out"
"$floor" --serve 127.0.0.1:0 >"$out" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
port=""
for _ in $(seq 600); do
  port="$(sed -n 's/^serving on port \([0-9]*\).*/\1/p' "$out")"
  [[ -n "$port" ]] && break
  kill -0 "$server" 2>/dev/null || { cat "$out"; exit 1; }
  sleep 0.1
done
[[ -n "$port" ]] || { echo "grpc_floor did not start"; cat "$out"; exit 1; }
for api in sync callback-wait callback stream; do
  line="$("$floor" --target "127.0.0.1:$port" --server-pid "$server" \
    --clients 4 --client-api "$api" --seconds 0.3)"
  echo "$line"
  [[ "$line" == *" calls/s; client "* ]] || exit 1
done
line="$("$floor" --target "127.0.0.1:$port" --server-pid "$server" \
  --clients 4 --connections 1 --client-api callback-wait --seconds 0.3)"
echo "$line"
[[ "$line" == *"clients 4 on 1 connections"*" calls/s; client "* ]] || exit 1
