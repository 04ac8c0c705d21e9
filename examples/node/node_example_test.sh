#!/usr/bin/env bash
# The Node.js producer and consumer against the real weir_server: every
# message sent arrives at the consumer and is deleted, both for messages
# queued before the consumer starts and for messages sent while it waits.
#
#   node_example_test.sh WEIR_SERVER WEIRCTL WEIR_PROTO
#
# node_modules comes from `npm ci` on the committed package-lock.json, cached
# in $WEIR_NODE_CACHE (default /tmp/weir-node-cache-$UID) and reused while the
# lock file is unchanged.
set -euo pipefail

server_bin="$1"
weirctl_bin="$2"
proto_file="$(readlink -f "$3")"
# The scripts and lock file sit beside this script in the runfiles.
example_dir="$(dirname "$0")"
work="$(mktemp -d "${TEST_TMPDIR:-/tmp}/node-example.XXXXXX")"
server_pid=""
failures=0

cleanup() {
  if [[ -n "$server_pid" ]]; then kill -9 "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

expect_eq() {
  if [[ "$2" == "$3" ]]; then
    echo "ok: $1"
  else
    fail "$1: got [$2], want [$3]"
  fi
}

for tool in node npm flock sha256sum; do
  command -v "$tool" >/dev/null ||
    { echo "FAIL: $tool is not installed (./weir installs nodejs and npm)" >&2; exit 1; }
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 18)) || { echo "FAIL: node $(node --version) is older than 18" >&2; exit 1; }

# node_modules, installed once per package-lock.json.
cache="${WEIR_NODE_CACHE:-/tmp/weir-node-cache-$(id -u)}"
mkdir -p "$cache"
lock_sum="$(sha256sum "$example_dir/package-lock.json" | cut -d' ' -f1)"
(
  flock 9
  if [[ "$(cat "$cache/installed" 2>/dev/null || true)" != "$lock_sum" ]]; then
    echo "npm ci in $cache"
    rm -rf "$cache/node_modules" "$cache/installed"
    cp "$example_dir/package.json" "$example_dir/package-lock.json" "$cache/"
    (cd "$cache" && npm_config_cache="$cache/npm-cache" \
      npm ci --no-audit --no-fund --loglevel=error) >&2
    echo "$lock_sum" >"$cache/installed"
  fi
) 9>"$cache/lock"
cp "$example_dir"/*.js "$work/"
ln -s "$cache/node_modules" "$work/node_modules"
# proto/ is three levels above proto/weir/v1/weir.proto.
export WEIR_PROTO_DIR="$(dirname "$(dirname "$(dirname "$proto_file")")")"

"$server_bin" --listen 127.0.0.1:0 --data-dir "$work/data" \
  --durability async --ready-file "$work/ready" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 600); do
  [[ -s "$work/ready" ]] && break
  kill -0 "$server_pid" 2>/dev/null ||
    { cat "$work/server.log" >&2; echo "FAIL: weir_server exited" >&2; exit 1; }
  sleep 0.1
done
[[ -s "$work/ready" ]] || { echo "FAIL: weir_server not ready in 60 s" >&2; exit 1; }
export WEIR_SERVER="$(cat "$work/ready")"

# checks QUEUE COUNT OUTPUT: the consumer printed offsets 0..COUNT-1 once
# each, and the server has nothing left and COUNT deletes.
checks() {
  local queue="$1" count="$2" out="$3"
  expect_eq "$queue: messages printed" "$(grep -c '^offset=' "$out" || true)" "$count"
  expect_eq "$queue: distinct offsets 0..$((count - 1))" \
    "$(sed -n 's/^offset=\([0-9]*\)\t.*/\1/p' "$out" | sort -n | uniq | tr '\n' ' ')" \
    "$(seq 0 $((count - 1)) | tr '\n' ' ')"
  grep -q '"id":0' "$out" || fail "$queue: body missing from the output"
  expect_eq "$queue: stats" \
    "$("$weirctl_bin" stats "$queue" | grep -E '^(ready|in_flight|delayed|sent_total|deleted_total)=' | tr '\n' ' ')" \
    "ready=0 in_flight=0 delayed=0 sent_total=$count deleted_total=$count "
}

# Queued first, then consumed.
(cd "$work" && node producer.js --queue before --count 200 --batch 64) ||
  fail "producer (before)"
(cd "$work" && timeout 120 node consumer.js --queue before --count 200) \
  >"$work/before.out" 2>"$work/before.err" ||
  fail "consumer (before): $(cat "$work/before.err")"
checks before 200 "$work/before.out"

# The consumer subscribes first and gets the messages pushed as they come.
"$weirctl_bin" create during >/dev/null
(cd "$work" && timeout 120 node consumer.js --queue during --count 50 --credit 8) \
  >"$work/during.out" 2>"$work/during.err" &
consumer_pid=$!
(cd "$work" && node producer.js --queue during --count 50 --batch 5) ||
  fail "producer (during)"
consumer_status=0
wait "$consumer_pid" || consumer_status=$?
expect_eq "consumer (during) exit status" "$consumer_status" "0"
grep -q 'falling back' "$work/during.err" && fail "the consumer did not use Subscribe"
checks during 50 "$work/during.out"

kill -TERM "$server_pid"
wait "$server_pid" || true
server_pid=""
if ((failures > 0)); then
  echo "$failures check(s) failed; server log:" >&2
  cat "$work/server.log" >&2
  exit 1
fi
echo "all Node.js example checks passed"
