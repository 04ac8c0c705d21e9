#!/usr/bin/env bash
# weirctl against the real weir_server: the README's example session, a body
# from stdin, change-visibility, groups and replay, tail (Subscribe), and
# errors reported as a non-zero exit with the gRPC code.
#
#   weirctl_test.sh WEIR_SERVER WEIRCTL
set -euo pipefail

server_bin="$1"
weirctl_bin="$2"
work="$(mktemp -d "${TEST_TMPDIR:-/tmp}/weirctl-test.XXXXXX")"
failures=0
server_pid=""

cleanup() {
  local status=$?
  if [[ -n "$server_pid" ]]; then kill -9 "$server_pid" 2>/dev/null || true; fi
  # Whatever ended the script early (set -e, a failed check), the server's
  # log says what the server saw.
  if ((status != 0)) && [[ -s "$work/server.log" ]]; then
    echo "server log:" >&2
    cat "$work/server.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# expect_eq WHAT GOT WANT
expect_eq() {
  if [[ "$2" == "$3" ]]; then
    echo "ok: $1"
  else
    fail "$1: got [$2], want [$3]"
  fi
}

# A bad value, from a flag or from its environment variable, is refused
# with a message naming the flag, and starts nothing.
# refused NAME ENV FLAG...: runs the server with the environment assignment
# ENV (none when empty) and FLAGs, and expects a refusal that names NAME. A
# server that took the value would serve: the timeout ends it.
refused() {
  local name="$1" assignment="$2"
  shift 2
  if env ${assignment:+"$assignment"} timeout 60 "$server_bin" \
    --listen 127.0.0.1:0 --data-dir "$work/refused" "$@" \
    >"$work/refused.out" 2>&1; then
    fail "weir_server accepted $assignment $*"
  elif ! grep -q -- "$name" "$work/refused.out"; then
    fail "$assignment $*: no clear error: $(cat "$work/refused.out")"
  else
    echo "ok: $assignment $* refused"
  fi
}
for bad in soon -1s 11s; do
  refused --async-sync-interval "" --async-sync-interval "$bad"
done
refused --async-sync-interval WEIR_ASYNC_SYNC_INTERVAL=soon
refused --async-sync-interval WEIR_ASYNC_SYNC_INTERVAL=11s
refused --durability WEIR_DURABILITY=sometimes
for bad in -1 8 65537 lots; do
  refused --memtable-budget-mib "" --memtable-budget-mib "$bad"
done
refused --memtable-budget-mib WEIR_MEMTABLE_BUDGET_MIB=15
[[ ! -e "$work/refused" ]] || fail "a refused start created its data directory"

"$server_bin" --listen 127.0.0.1:0 --data-dir "$work/data" \
  --durability async --async-sync-interval 50ms --memtable-budget-mib 64 \
  --ready-file "$work/ready" \
  2>"$work/server.log" &
server_pid=$!
# Waits for the ready file (written once the server serves), up to 60 s.
for _ in $(seq 600); do
  [[ -s "$work/ready" ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/server.log" >&2
    echo "FAIL: weir_server exited before serving" >&2
    exit 1
  fi
  sleep 0.1
done
[[ -s "$work/ready" ]] || { echo "FAIL: weir_server not ready in 60 s" >&2; exit 1; }
export WEIR_SERVER="$(cat "$work/ready")"
if grep -q "durability async, WAL fsynced every 50ms" "$work/server.log"; then
  echo "ok: the server took --async-sync-interval 50ms"
else
  fail "the server log does not show the 50ms WAL sync interval"
fi
if grep -q "memtables 64 MiB in all" "$work/server.log"; then
  echo "ok: the server took --memtable-budget-mib 64"
else
  fail "the server log does not show the 64 MiB memtable budget"
fi
weirctl() { "$weirctl_bin" "$@"; }
# field NAME LINE: the value of the tab-separated NAME=value field of LINE.
field() { tr '\t' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -n 1; }
# column NAME: the NAME field of every line of stdin, space-separated.
column() {
  local line
  while IFS= read -r line; do printf '%s ' "$(field "$1" "$line")"; done
}

# The README's session.
weirctl create orders --visibility-timeout 30000 >/dev/null ||
  fail "create orders"
expect_eq "send prints the offset" \
  "$(weirctl send orders '{"id": 1}' --attr type=new)" "0"
expect_eq "send from stdin" "$(printf 'from stdin' | weirctl send orders)" "1"
received="$(weirctl receive orders -n 10)"
expect_eq "receive returns both" "$(wc -l <<<"$received" | tr -d ' ')" "2"
first="$(head -n 1 <<<"$received")"
second="$(sed -n 2p <<<"$received")"
expect_eq "offset of the first" "$(field offset "$first")" "0"
expect_eq "receive count of the first" "$(field receive_count "$first")" "1"
expect_eq "attribute of the first" "$(field attr:type "$first")" "new"
[[ "$first" == *'{"id": 1}'* ]] || fail "body missing from [$first]"
[[ "$second" == *'from stdin'* ]] || fail "stdin body missing from [$second]"
receipt0="$(field receipt "$first")"
receipt1="$(field receipt "$second")"
weirctl delete orders "$receipt0" >/dev/null || fail "delete"
stats="$(weirctl stats orders)"
expect_eq "in flight after one delete" \
  "$(grep '^in_flight=' <<<"$stats")" "in_flight=1"
expect_eq "deleted total" "$(grep '^deleted_total=' <<<"$stats")" \
  "deleted_total=1"

# Release the other one: it comes back with its receive count raised, and
# the old receipt is fenced.
weirctl change-visibility orders "$receipt1" 0 >/dev/null ||
  fail "change-visibility 0"
again="$(weirctl receive orders -n 10)"
expect_eq "released message comes back" \
  "$(field offset "$again") $(field receive_count "$again")" "1 2"
weirctl delete orders "$receipt1" >"$work/out" 2>&1 || true
grep -q FAILED_PRECONDITION "$work/out" ||
  fail "a stale receipt was not fenced: $(cat "$work/out")"

# Groups and replay.
weirctl group-create orders audit --from earliest >/dev/null ||
  fail "group-create"
expect_eq "a new group sees every retained message" \
  "$(weirctl receive orders -n 10 --group audit | column offset)" "1 "
expect_eq "read replays from an offset" \
  "$(weirctl read orders --from offset:0 | column offset)" "1 "

# Changing the configuration: only what is given changes.
updated="$(weirctl update orders --visibility-timeout 60000)"
expect_eq "update sets the field" "$(field visibility_timeout_ms "$updated")" \
  "60000"
expect_eq "update keeps the rest" "$(field delay_ms "$updated")" "0"

# Listing and deleting queues.
weirctl create other >/dev/null || fail "create other"
expect_eq "list" "$(weirctl list | column name)" "orders other "
weirctl delete-queue other >/dev/null || fail "delete-queue"

# tail: what is there already, then what arrives while it runs.
weirctl create feed >/dev/null || fail "create feed"
printf 'one\ntwo\n' | weirctl send feed --lines >/dev/null || fail "send feed"
timeout 60 "$weirctl_bin" tail feed -n 2 --delete >"$work/tail1" 2>&1 ||
  fail "tail -n 2 --delete: $(cat "$work/tail1")"
expect_eq "tail prints what is queued" "$(column offset <"$work/tail1")" "0 1 "
expect_eq "tail prints receive's format" \
  "$(field receive_count "$(head -n 1 "$work/tail1")")" "1"
[[ "$(head -n 1 "$work/tail1")" == *$'\tone' ]] ||
  fail "body missing from [$(head -n 1 "$work/tail1")]"
stats="$(weirctl stats feed)"
expect_eq "tail --delete deletes" \
  "$(grep -E '^(in_flight|deleted_total)=' <<<"$stats" | tr '\n' ' ')" \
  "in_flight=0 deleted_total=2 "
timeout 60 "$weirctl_bin" tail feed -n 3 --delete >"$work/tail2" 2>&1 &
tail_pid=$!
# Sent while tail waits: pushed to it as they arrive.
for body in three four five; do
  weirctl send feed "$body" >/dev/null || fail "send $body"
done
tail_status=0
wait "$tail_pid" || tail_status=$?
expect_eq "tail exit status" "$tail_status" "0"
expect_eq "tail prints what arrives" "$(column offset <"$work/tail2")" "2 3 4 "
# Without --delete the leases end with the stream: at once, not after the
# visibility timeout.
weirctl send feed six >/dev/null || fail "send six"
timeout 60 "$weirctl_bin" tail feed -n 1 --visibility-timeout 600000 \
  >"$work/tail3" 2>&1 || fail "tail -n 1: $(cat "$work/tail3")"
expect_eq "tail without --delete" "$(column offset <"$work/tail3")" "5 "
stats="$(weirctl stats feed)"
expect_eq "tail's leases are released when it exits" \
  "$(grep -E '^(ready|in_flight)=' <<<"$stats" | tr '\n' ' ')" \
  "ready=1 in_flight=0 "
weirctl group-create feed audit --from latest >/dev/null ||
  fail "group-create feed audit"
weirctl send feed seven >/dev/null || fail "send seven"
timeout 60 "$weirctl_bin" tail feed --group audit -n 1 --delete \
  >"$work/tail4" 2>&1 || fail "tail --group: $(cat "$work/tail4")"
expect_eq "tail --group" "$(column offset <"$work/tail4")" "6 "
if timeout 60 "$weirctl_bin" tail no-such-queue -n 1 2>"$work/err"; then
  fail "tail of an unknown queue succeeded"
fi
grep -q NOT_FOUND "$work/err" || fail "tail: no NOT_FOUND in [$(cat "$work/err")]"

# Errors: a non-zero exit and the code on stderr.
if weirctl stats no-such-queue 2>"$work/err"; then
  fail "stats of an unknown queue succeeded"
fi
grep -q NOT_FOUND "$work/err" || fail "no NOT_FOUND in [$(cat "$work/err")]"
if weirctl create 'bad name!' 2>"$work/err"; then
  fail "a bad queue name was accepted"
fi
grep -q INVALID_ARGUMENT "$work/err" ||
  fail "no INVALID_ARGUMENT in [$(cat "$work/err")]"

# The server took all of it and still stops cleanly.
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
expect_eq "weir_server exit status on SIGTERM" "$status" "0"

if ((failures > 0)); then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all weirctl checks passed"
