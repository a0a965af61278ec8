#!/usr/bin/env bash
# Sync into a folder that ignores case, as macOS and Windows folders do: a
# case-insensitive pass-through file system (tests/casefold/cifs.py, FUSE
# through fusepy) over a temporary folder, the real `tessera serve` on a
# loopback port and the real `tessera` client. The server holds names that
# differ only in case (from a Linux folder); the client keeps one of each,
# never downloads the other over it, lists it in `tessera conflicts`, and
# never touches a local file to make room. Prints "casefold: N passed,
# N failed"; non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
need_apt=()
command -v fusermount >/dev/null || need_apt+=(fuse)
ldconfig -p | grep -q 'libfuse\.so\.2' || need_apt+=(libfuse2)
python3 -c 'import venv' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  echo "casefold: /dev/fuse is missing: this machine offers no FUSE"
  echo "casefold: 0 passed, 1 failed"
  exit 1
fi

WORK=$(mktemp -d)
SERVER=
FUSE_PID=
MNT=$WORK/mnt
cleanup() {
  if [ -n "$FUSE_PID" ]; then
    fusermount -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    kill "$FUSE_PID" 2>/dev/null || true
  fi
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
  sleep 0.2
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q fusepy

cargo build -p tessera --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/tessera

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
PASSWORD=casefold-$RANDOM$RANDOM
TESSERA_ADMIN_PASSWORD=$PASSWORD TESSERA_LOG=${TESSERA_LOG:-warn} \
  "$BIN" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
URL="http://127.0.0.1:$PORT"
export TESSERA_CONFIG_DIR=$WORK/config TESSERA_LOG=warn
echo "$PASSWORD" | "$BIN" login --server "$URL" --user admin --password-stdin --device laptop >/dev/null

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
holds() { # file, expected contents
  [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}
entries() { # folder: how many names it holds
  find "$1" -mindepth 1 -maxdepth 1 | wc -l
}
server_holds() { # remote path, expected contents
  rm -f "$WORK/got"
  "$BIN" get "$1" "$WORK/got" >/dev/null 2>&1 && [ "$(cat "$WORK/got")" = "$2" ]
}
fails() { ! "$@"; }

# --- a Linux folder: names that differ only in case ---
LINUX=$WORK/linux
mkdir -p "$LINUX/include" "$LINUX/Docs" "$LINUX/notes"
printf 'target DSCP' >"$LINUX/include/xt_DSCP.h"
printf 'match dscp' >"$LINUX/include/xt_dscp.h"
printf 'upper' >"$LINUX/Docs/Index.html"
printf 'lower' >"$LINUX/Docs/index.html"
printf 'theirs' >"$LINUX/notes/readme.md"
printf 'plain' >"$LINUX/notes/plain.txt"
check "the Linux folder syncs whole" "$BIN" sync --once "$LINUX"
check "the server keeps xt_DSCP.h" server_holds /include/xt_DSCP.h "target DSCP"
check "and xt_dscp.h" server_holds /include/xt_dscp.h "match dscp"

# --- a folder that ignores case ---
mkdir -p "$WORK/back" "$MNT"
"$WORK/venv/bin/python" tests/casefold/cifs.py "$WORK/back" "$MNT" >"$WORK/fuse.log" 2>&1 &
FUSE_PID=$!
for _ in $(seq 1 50); do
  mountpoint -q "$MNT" && break
  sleep 0.1
done
check "the folder is mounted" mountpoint -q "$MNT"
mkdir -p "$MNT/notes"
printf 'mine' >"$MNT/notes/README.md"
check "the mount ignores case" holds "$MNT/NOTES/readme.MD" mine

set +e
"$BIN" sync --once "$MNT" >"$WORK/sync1.log" 2>&1
first=$?
set -e
check "sync --once exits non-zero while names are left out" test "$first" != 0
check "and does not say it is in sync" fails grep -q "is in sync" "$WORK/sync1.log"
check "one of xt_DSCP.h / xt_dscp.h is here" test "$(entries "$WORK/back/include")" = 1
check "it is xt_DSCP.h, whole" holds "$WORK/back/include/xt_DSCP.h" "target DSCP"
check "one of Index.html / index.html is here" test "$(entries "$WORK/back/Docs")" = 1
check "the local README.md is kept as it was" holds "$WORK/back/notes/README.md" mine
check "nothing else went into notes/" test "$(entries "$WORK/back/notes")" = 2
check "the local README.md went up under its own name" server_holds /notes/README.md mine
check "the server's readme.md is untouched" server_holds /notes/readme.md theirs
check "files without a clash came down" holds "$WORK/back/notes/plain.txt" plain
"$BIN" conflicts "$MNT" >"$WORK/conflicts.log" 2>&1 || true
check "conflicts lists the clash of xt_dscp.h" grep -q "case clash: /include/xt_dscp.h" "$WORK/conflicts.log"
check "conflicts lists the clash of index.html" grep -q "case clash: /Docs/index.html" "$WORK/conflicts.log"
check "conflicts lists the clash of readme.md" grep -q "case clash: /notes/readme.md" "$WORK/conflicts.log"
check "conflicts says how to resolve it" grep -q "tessera mv /include/xt_dscp.h" "$WORK/conflicts.log"
set +e
"$BIN" sync --once "$MNT" >"$WORK/sync2.log" 2>&1
second=$?
set -e
check "a second sync leaves everything in place" \
  bash -c "[ $second != 0 ] && [ \"\$(cat '$WORK/back/include/xt_DSCP.h')\" = 'target DSCP' ] && [ \"\$(cat '$WORK/back/notes/README.md')\" = mine ]"
"$BIN" status "$MNT" >"$WORK/status.log" 2>&1 && status_rc=0 || status_rc=$?
check "status names the clash and exits non-zero" \
  bash -c "[ $status_rc != 0 ] && grep -q 'case clash' '$WORK/status.log'"

# --- resolving the clashes on the server ---
"$BIN" mv /include/xt_dscp.h /include/xt_dscp_match.h >/dev/null
"$BIN" mv /Docs/index.html /Docs/index-lower.html >/dev/null
"$BIN" mv /notes/readme.md /notes/readme-theirs.md >/dev/null
check "once resolved, sync --once succeeds" "$BIN" sync --once "$MNT"
check "the renamed file came down" holds "$WORK/back/include/xt_dscp_match.h" "match dscp"
check "the other renamed files came down" \
  bash -c "[ \"\$(cat '$WORK/back/Docs/index-lower.html')\" = lower ] && [ \"\$(cat '$WORK/back/notes/readme-theirs.md')\" = theirs ]"
"$BIN" conflicts "$MNT" >"$WORK/conflicts2.log" 2>&1 || true
check "conflicts lists no clash any more" fails grep -q "case clash" "$WORK/conflicts2.log"

# --- a rename that changes only case, made on the server ---
"$BIN" mv /Docs/Index.html /Docs/INDEX.html >/dev/null
check "a case-only rename syncs" "$BIN" sync --once "$MNT"
check "and the file takes the new spelling" \
  bash -c "ls '$WORK/back/Docs' | grep -qx INDEX.html && [ \"\$(cat '$WORK/back/Docs/INDEX.html')\" = upper ]"

if [ "$failed" != 0 ]; then
  for f in sync1 sync2 conflicts status; do
    echo "--- $f ---"
    cat "$WORK/$f.log" 2>/dev/null || true
  done
  echo "--- server log (last 20 lines) ---"
  tail -n 20 "$WORK/server.log"
  echo "--- fuse log (last 20 lines) ---"
  tail -n 20 "$WORK/fuse.log"
fi
echo "casefold: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
