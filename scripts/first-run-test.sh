#!/usr/bin/env bash
# The README's first command, exactly as a newcomer types it in a fresh
# clone: `cargo run --release -- serve` must build, start with embedded
# defaults and answer /healthz. Only the data folder and port are moved (by
# environment, so the command line stays the README's) so that the run
# leaves the checkout clean. Prints "first-run: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

cmd=$(grep -m1 -o 'cargo run[^#]*serve' README.md | sed 's/ *$//')
if [ "$cmd" != "cargo run --release -- serve" ]; then
  echo "first-run: the README's first command changed to '$cmd'; update this test"
  echo "first-run: 0 passed, 1 failed"
  exit 1
fi

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVER=
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

TESSERA_DATA_DIR="$WORK/data" TESSERA_LISTEN="127.0.0.1:$PORT" TESSERA_LOG=${TESSERA_LOG:-warn} \
  $cmd >"$WORK/serve.log" 2>&1 &
SERVER=$!

# The release build may take minutes on a cold machine; the server then
# starts in well under a second.
deadline=$((SECONDS + 2400))
while [ "$SECONDS" -lt "$deadline" ]; do
  if python3 -c "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen(\"http://127.0.0.1:$PORT/healthz\", timeout=2).status == 200 else 1)" 2>/dev/null; then
    echo "first-run: '$cmd' answers /healthz"
    echo "first-run: 1 passed, 0 failed"
    exit 0
  fi
  if ! kill -0 "$SERVER" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
echo "first-run: '$cmd' did not answer /healthz; its output:"
tail -30 "$WORK/serve.log"
echo "first-run: 0 passed, 1 failed"
exit 1
