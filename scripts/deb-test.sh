#!/usr/bin/env bash
# The Debian package as an administrator installs it: built with cargo-deb
# (from the debug build, to spare CI a release build; the package is the
# same but for the binary's speed), installed with dpkg, then the server
# started as its systemd unit starts it, and /healthz asked. Where systemd
# runs (PID 1), the unit itself is started; in a container without it,
# the unit's ExecStart runs as the unit's User with its Environment lines,
# which this script reads from the installed unit. Both units are checked
# with `systemd-analyze verify`. Installed twice (an upgrade in place),
# then purged; the state folder is left, as the package promises.
# Prints "deb: N passed, N failed"; non-zero on failure. Needs root (or
# sudo): it installs a package and adds a system user.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
need=()
command -v curl >/dev/null || need+=(curl)
command -v adduser >/dev/null || need+=(adduser)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# cargo-deb, built once into the target folder.
DEB_TOOL=$TARGET/tools/bin/cargo-deb
if [ ! -x "$DEB_TOOL" ]; then
  echo "building cargo-deb"
  cargo install cargo-deb --version 3.8.0 --locked --quiet --root "$TARGET/tools"
fi

cargo build -p tessera --locked --quiet
rm -rf "$TARGET/debian"
"$DEB_TOOL" -p tessera --no-build --profile dev --no-strip --output "$TARGET/debian/" >/dev/null
DEB=$(ls "$TARGET"/debian/tessera_*.deb)
echo "built $(basename "$DEB")"

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

# It installs, purges and removes /var/lib/tessera: never over a real
# installation.
if [ -z "${TESSERA_DEB_TEST_REPLACES_INSTALL:-}" ] \
  && { [ -e /var/lib/tessera ] || dpkg -s tessera >/dev/null 2>&1; }; then
  echo "deb: this machine has a Tessera installation (/var/lib/tessera or the package);"
  echo "deb: the test would remove it. Run it on a throwaway machine, or set"
  echo "deb: TESSERA_DEB_TEST_REPLACES_INSTALL=1 to let it. Nothing was changed."
  echo "deb: 0 passed, 1 failed"
  exit 1
fi

SERVER=
UNIT_STARTED=
cleanup() {
  [ -n "$SERVER" ] && $SUDO kill "$SERVER" 2>/dev/null || true
  [ -n "$UNIT_STARTED" ] && $SUDO systemctl stop tessera 2>/dev/null || true
  wait 2>/dev/null || true
  $SUDO dpkg --purge tessera >/dev/null 2>&1 || true
  $SUDO rm -rf /var/lib/tessera /etc/tessera
  $SUDO deluser --system tessera >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

CONTENTS=$(dpkg-deb --contents "$DEB")
listed() { grep -q " \./$1\$" <<<"$CONTENTS"; }
check "the package holds the binary" listed usr/bin/tessera
check "the package holds the server unit" listed lib/systemd/system/tessera.service
check "the package holds the sync user unit" listed 'usr/lib/systemd/user/tessera-sync@.service'
check "the package holds the settings file" listed etc/tessera/tessera.env
check "the package holds the operations guide" listed usr/share/doc/tessera/OPERATIONS.md

$SUDO dpkg -i "$DEB" >/dev/null
UNIT=/lib/systemd/system/tessera.service
check "the binary is installed and runs" /usr/bin/tessera --version
check "the server runs as its own system user" getent passwd tessera
check "the state folder is the service user's alone" \
  test "$($SUDO stat -c '%U %a' /var/lib/tessera)" = "tessera 700"
check "the server unit passes systemd-analyze verify" $SUDO systemd-analyze verify "$UNIT"
# A template is verified through an instance of it.
INSTANCE=$(mktemp -d)/tessera-sync@home-alice-Tessera.service
cp /usr/lib/systemd/user/tessera-sync@.service "$INSTANCE"
# A user manager's runtime folder, which a root shell in a container lacks.
check "the sync user unit passes systemd-analyze verify" \
  env XDG_RUNTIME_DIR="$(dirname "$INSTANCE")" systemd-analyze --user verify "$INSTANCE"
for opt in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes StateDirectory=tessera User=tessera; do
  check "the server unit sets $opt" grep -qx "$opt" "$UNIT"
done

# Started on a free port, set the way an administrator sets it.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "TESSERA_LISTEN=127.0.0.1:$PORT" | $SUDO tee /etc/tessera/tessera.env >/dev/null
if [ -d /run/systemd/system ]; then
  echo "systemd runs here: starting the unit"
  $SUDO systemctl start tessera
  UNIT_STARTED=1
else
  echo "no systemd here: running the unit's ExecStart as its User, with its Environment"
  mapfile -t envs < <(sed -n 's/^Environment=//p' "$UNIT")
  mapfile -t file_envs < <(grep -E '^[A-Z_]+=' /etc/tessera/tessera.env)
  user=$(sed -n 's/^User=//p' "$UNIT")
  read -r -a exec <<<"$(sed -n 's/^ExecStart=//p' "$UNIT")"
  $SUDO runuser -u "$user" -- env -i PATH=/usr/bin:/bin "${envs[@]}" "${file_envs[@]}" \
    TESSERA_LOG=warn "${exec[@]}" >/tmp/tessera-deb-server.log 2>&1 &
  SERVER=$!
fi
up=
for _ in $(seq 1 150); do
  if curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
check "the installed server answers /healthz" test -n "$up"
check "its database and master key are in the state folder, the user's own" \
  test "$($SUDO stat -c '%U %a' /var/lib/tessera/master.key)" = "tessera 600"
check "an upgrade in place installs over it" $SUDO dpkg -i "$DEB"
if [ -n "$SERVER" ]; then $SUDO kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; fi
[ -n "$UNIT_STARTED" ] && $SUDO systemctl stop tessera
$SUDO dpkg --purge tessera >/dev/null
check "a purge keeps the files, database and key" $SUDO test -f /var/lib/tessera/master.key
check "a purge takes the binary away" test ! -e /usr/bin/tessera

if [ "$failed" != 0 ] && [ -f /tmp/tessera-deb-server.log ]; then
  echo "--- server log ---"
  tail -n 30 /tmp/tessera-deb-server.log
fi
rm -f /tmp/tessera-deb-server.log
echo "deb: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
