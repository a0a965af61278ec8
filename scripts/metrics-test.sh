#!/usr/bin/env bash
# GET /metrics as a Prometheus server scrapes it: a real `tessera serve` on a
# loopback port with a metrics token, a few requests by curl (log in, upload
# one file twice, list, hold a long poll), then the scrape, linted by
# Prometheus's own promtool and checked for the counts those requests must
# leave. promtool comes out of Debian's prometheus package, unpacked into
# the target folder without installing Prometheus. Prints
# "metrics: N passed, N failed"; non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
if ! command -v curl >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq curl >/dev/null
fi
PROMTOOL=$TARGET/promtool/usr/bin/promtool
if [ ! -x "$PROMTOOL" ]; then
  echo "fetching promtool (Debian's prometheus package, unpacked, not installed)"
  P=$(mktemp -d)
  if ! (cd "$P" && apt-get download prometheus >/dev/null 2>&1); then
    $SUDO apt-get update -qq
    (cd "$P" && apt-get download prometheus >/dev/null)
  fi
  rm -rf "$TARGET/promtool"
  dpkg -x "$P"/prometheus_*.deb "$TARGET/promtool"
  rm -rf "$P"
fi

cargo build -p tessera --quiet
BIN=$TARGET/debug/tessera

WORK=$(mktemp -d)
SERVER=
POLL=
cleanup() {
  [ -n "$POLL" ] && kill "$POLL" 2>/dev/null || true
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
PASSWORD=metrics-test-$RANDOM$RANDOM
METRICS_TOKEN=scrape-$RANDOM$RANDOM$RANDOM
TESSERA_ADMIN_PASSWORD=$PASSWORD TESSERA_METRICS_TOKEN=$METRICS_TOKEN TESSERA_LOG=${TESSERA_LOG:-warn} \
  "$BIN" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
  curl -sf "$URL/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

passed=0
failed=0
check() { # name, then a command that must succeed
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok: $name"
  else
    failed=$((failed + 1))
    echo "FAILED: $name"
  fi
}
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
scrape() { curl -sSf -H "Authorization: Bearer $METRICS_TOKEN" "$URL/metrics" >"$1"; }
# value FILE 'name{labels}': the sample's value, labels exactly as rendered
# in any order; "absent" when there is none.
value() {
  python3 - "$1" "$2" <<'EOF'
import re, sys
path, want = sys.argv[1], sys.argv[2]
def key(series):
    name, _, labels = series.partition("{")
    pairs = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)
    return name, tuple(sorted(pairs))
target = key(want)
for line in open(path):
    if line.startswith("#") or not line.strip():
        continue
    series, value = line.rsplit(" ", 1)
    if key(series) == target:
        print(value.strip())
        break
else:
    print("absent")
EOF
}
is() { # file, series, expected value
  local got
  got=$(value "$1" "$2")
  [ "$got" = "$3" ] || { echo "  $2 is $got, not $3"; return 1; }
}

check "the server answers /healthz" test "$(status "$URL/healthz")" = 200
check "/metrics without the token is 401" test "$(status "$URL/metrics")" = 401
check "/metrics with a wrong token is 401" test "$(status -H "Authorization: Bearer nope" "$URL/metrics")" = 401
check "/metrics with the token is 200" test "$(status -H "Authorization: Bearer $METRICS_TOKEN" "$URL/metrics")" = 200

TOKEN=$(curl -sSf -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\",\"device\":\"curl\"}" \
  "$URL/api/v1/auth/login" | json '["token"]')
AUTH="Authorization: Bearer $TOKEN"
scrape "$WORK/before.txt"

SECRET=quarterly-secret-Qx7
head -c 200000 /dev/urandom >"$WORK/file.bin"
for name in "$SECRET.bin" "copy-of-$SECRET.bin"; do
  check "upload $name" test "$(status -X PUT -H "$AUTH" --data-binary @"$WORK/file.bin" "$URL/api/v1/files/content?path=/$name")" = 201
done
check "list the root" test "$(status -H "$AUTH" "$URL/api/v1/files/list?path=/")" = 200
CURSOR=$(curl -sSf -H "$AUTH" "$URL/api/v1/changes/latest" | json '["cursor"]')
curl -s -H "$AUTH" "$URL/api/v1/changes/poll?cursor=$CURSOR&timeout=60" >"$WORK/poll.json" &
POLL=$!
for _ in $(seq 1 300); do
  held=$(curl -sSf -H "$AUTH" "$URL/api/v1/presence" | json '["devices"].__len__()')
  [ "$held" = 1 ] && break
  sleep 0.05
done
scrape "$WORK/metrics.txt"

check "promtool finds the scrape well-formed and well-named" \
  "$PROMTOOL" check metrics <"$WORK/metrics.txt"
check "two uploads counted on their route" \
  is "$WORK/metrics.txt" 'tessera_http_requests_total{method="PUT",route="/api/v1/files/content",status="201"}' 2
check "the listing counted on its route" \
  is "$WORK/metrics.txt" 'tessera_http_requests_total{method="GET",route="/api/v1/files/list",status="200"}' 1
check "the refused scrapes counted as 401s" \
  is "$WORK/metrics.txt" 'tessera_http_requests_total{method="GET",route="/metrics",status="401"}' 2
check "the uploaded bytes counted as they arrived" \
  is "$WORK/metrics.txt" 'tessera_http_request_body_bytes_total{method="PUT",route="/api/v1/files/content"}' 400000
check "one block stored" is "$WORK/metrics.txt" tessera_blocks_stored_total 1
check "one block deduplicated" is "$WORK/metrics.txt" tessera_blocks_deduplicated_total 1
check "the held poll shows" is "$WORK/metrics.txt" tessera_long_polls_held 1
check "failovers are described at zero" is "$WORK/metrics.txt" tessera_db_failovers_total 0
check "no series names the file" bash -c "! grep -q '$SECRET' '$WORK/metrics.txt'"

check "a change answers the poll" test "$(status -X POST -H "$AUTH" -H 'Content-Type: application/json' -d '{"path":"/woken"}' "$URL/api/v1/files/mkdir")" = 201
wait "$POLL" || true
POLL=
scrape "$WORK/after.txt"
check "the poll is gone from the gauge" is "$WORK/after.txt" tessera_long_polls_held 0
check "the poll counted once it answered" \
  is "$WORK/after.txt" 'tessera_http_requests_total{method="GET",route="/api/v1/changes/poll",status="200"}' 1

if [ "$failed" != 0 ]; then
  echo "--- scrape ---"
  grep -v '_bucket' "$WORK/metrics.txt" || true
  echo "--- server log (last 40 lines) ---"
  tail -n 40 "$WORK/server.log"
fi
echo "metrics: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
