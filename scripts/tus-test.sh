#!/usr/bin/env bash
# TUS interoperability: a real `tessera serve` on a loopback port, spoken to
# by curl (by hand, as the protocol reads) and by tus-js-client under
# Node.js, unchanged. Prints "N passed, N failed"; non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need_apt=()
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ ! -d tests/tus/node_modules/tus-js-client ]; then
  (cd tests/tus && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo build -p tessera --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera

WORK=$(mktemp -d)
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  sleep 0.2
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
PASSWORD=tus-test-$RANDOM$RANDOM
BOB_PASSWORD=bob-$RANDOM$RANDOM
TESSERA_ADMIN_PASSWORD=$PASSWORD TESSERA_LOG=${TESSERA_LOG:-warn} \
  "$BIN" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
URL="http://127.0.0.1:$PORT"
# A second user, once the first start has made the admin.
echo "$BOB_PASSWORD" | TESSERA_LOG=warn "$BIN" admin user add bob --password-stdin --data-dir "$WORK/data" >/dev/null

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

# --- curl, by hand ---
TOKEN=$(curl -sSf -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\",\"device\":\"curl\"}" \
  "$URL/api/v1/auth/login" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')
AUTH="Authorization: Bearer $TOKEN"
TUS="Tus-Resumable: 1.0.0"
head -c $((9 << 20)) /dev/urandom >"$WORK/file.bin"
head -c $((4 << 20)) "$WORK/file.bin" >"$WORK/part1"
tail -c +$(((4 << 20) + 1)) "$WORK/file.bin" >"$WORK/part2"
SIZE=$(stat -c %s "$WORK/file.bin")
META="path $(printf '/curl/file.bin' | base64 -w0)"

status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
header() { # name, then curl arguments: prints that response header
  local name=$1
  shift
  curl -s -o /dev/null -D - "$@" | tr -d '\r' | awk -v h="$(echo "$name" | tr 'A-Z' 'a-z')" -F': ' 'tolower($1) == h { print $2 }'
}

LOCATION=$(header Location -X POST -H "$AUTH" -H "$TUS" -H "Upload-Length: $SIZE" -H "Upload-Metadata: $META" "$URL/api/v1/tus/")
check "curl: creation answers with a Location" test -n "$LOCATION"
check "curl: HEAD of a new upload is at 0" test "$(header Upload-Offset -I -H "$AUTH" -H "$TUS" "$URL$LOCATION")" = 0
check "curl: a PATCH at the wrong offset is 409" \
  test "$(status -X PATCH -H "$AUTH" -H "$TUS" -H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 7' --data-binary @"$WORK/part1" "$URL$LOCATION")" = 409
SHA=$(openssl dgst -sha1 -binary "$WORK/part1" | base64 -w0)
check "curl: first piece with a checksum" \
  test "$(header Upload-Offset -X PATCH -H "$AUTH" -H "$TUS" -H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' -H "Upload-Checksum: sha1 $SHA" --data-binary @"$WORK/part1" "$URL$LOCATION")" = $((4 << 20))
check "curl: a checksum mismatch is 460" \
  test "$(status -X PATCH -H "$AUTH" -H "$TUS" -H 'Content-Type: application/offset+octet-stream' -H "Upload-Offset: $((4 << 20))" -H "Upload-Checksum: sha1 $SHA" --data-binary @"$WORK/part2" "$URL$LOCATION")" = 460
check "curl: HEAD after the mismatch still at 4 MiB" test "$(header Upload-Offset -I -H "$AUTH" -H "$TUS" "$URL$LOCATION")" = $((4 << 20))
REV=$(header Tessera-Rev -X PATCH -H "$AUTH" -H "$TUS" -H 'Content-Type: application/offset+octet-stream' -H "Upload-Offset: $((4 << 20))" -T "$WORK/part2" "$URL$LOCATION")
check "curl: the last piece commits revision 1" test "$REV" = 1
curl -sSf -H "$AUTH" -o "$WORK/back.bin" "$URL/api/v1/files/content?path=/curl/file.bin"
check "curl: the download equals the file" cmp -s "$WORK/file.bin" "$WORK/back.bin"
check "curl: DELETE of a finished upload's session" test "$(status -X DELETE -H "$AUTH" -H "$TUS" "$URL$LOCATION")" = 204

# --- tus-js-client ---
set +e
(cd tests/tus && TESSERA_URL=$URL TESSERA_TEST_PASSWORD=$PASSWORD TESSERA_TEST_BOB_PASSWORD=$BOB_PASSWORD \
  timeout 300 node --test --test-reporter=spec tus.test.mjs) 2>&1 | tee "$WORK/node.log"
node_status=${PIPESTATUS[0]}
set -e
passed=$((passed + $(grep -Eo '^ℹ pass [0-9]+' "$WORK/node.log" | grep -Eo '[0-9]+' || echo 0)))
node_failed=$(grep -Eo '^ℹ fail [0-9]+' "$WORK/node.log" | grep -Eo '[0-9]+' || echo 1)
[ "$node_status" != 0 ] && [ "$node_failed" = 0 ] && node_failed=1
failed=$((failed + node_failed))
if [ "$failed" != 0 ]; then
  echo "--- server log (last 40 lines) ---"
  tail -n 40 "$WORK/server.log"
fi
echo "tus: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
