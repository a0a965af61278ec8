#!/usr/bin/env bash
# Browser tests of the web UI: a real `tessera serve` on a loopback port,
# driven through headless Chromium (Debian's package) by playwright-core.
# Prints "N passed, N failed" and exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -d tests/web/node_modules/playwright-core ]; then
  (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo build -p tessera --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera

WORK=$(mktemp -d)
cleanup() {
  # The test restarts the server once, so its pid lives in a file.
  if [ -f "$WORK/server.pid" ]; then kill "$(cat "$WORK/server.pid")" 2>/dev/null || true; fi
  sleep 0.2
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
PASSWORD=web-test-$RANDOM$RANDOM
# A 32 MiB file limit, so the test can meet it without moving much data.
TESSERA_ADMIN_PASSWORD=$PASSWORD TESSERA_LOG=${TESSERA_LOG:-warn} TESSERA_MAX_FILE_SIZE=$((32 << 20)) \
  "$BIN" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
echo $! >"$WORK/server.pid"
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

export TESSERA_URL="http://127.0.0.1:$PORT"
export TESSERA_TEST_PASSWORD=$PASSWORD
export TESSERA_BIN=$BIN
export TESSERA_TEST_DATA=$WORK/data TESSERA_TEST_PORT=$PORT TESSERA_TEST_PIDFILE=$WORK/server.pid TESSERA_TEST_LOG=$WORK/server.log
export TESSERA_CLI_HOME=$WORK/cli
export TESSERA_SCREENSHOTS=$ROOT/docs/screenshots
export CHROMIUM=${CHROMIUM:-$(command -v chromium)}
mkdir -p "$TESSERA_CLI_HOME" "$TESSERA_SCREENSHOTS"

set +e
(cd tests/web && timeout 300 node --test --test-reporter=spec --test-concurrency=1 web.test.mjs) 2>&1 | tee "$WORK/node.log"
status=${PIPESTATUS[0]}
set -e

passed=$(grep -Eo '^ℹ pass [0-9]+' "$WORK/node.log" | grep -Eo '[0-9]+' || echo 0)
failed=$(grep -Eo '^ℹ fail [0-9]+' "$WORK/node.log" | grep -Eo '[0-9]+' || echo 1)
if [ "$status" != 0 ]; then
  echo "--- server log (last 40 lines) ---"
  tail -n 40 "$WORK/server.log"
  [ "$failed" = 0 ] && failed=1
fi
echo "web: ${passed} passed, ${failed} failed"
[ "$status" = 0 ] && [ "$failed" = 0 ]
