#!/usr/bin/env bash
# Runs every test: unit tests, and the end-to-end suite on SQLite and on a
# throwaway PostgreSQL cluster that this script starts on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

PGPORT=${TESSERA_TEST_PGPORT:-$((40000 + RANDOM % 20000))}
as=()

start_postgres() {
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        echo "installing PostgreSQL..."
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq postgresql >/dev/null
    fi
    PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
    PGDIR=$(mktemp -d /tmp/tessera-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PGDIR"
        as=(su postgres -c)
    else
        as=(bash -c)
    fi
    "${as[@]}" "$PGBIN/initdb -D $PGDIR/data -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null"
    "${as[@]}" "$PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/pg.log -w -o '-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=400' start >/dev/null"
    trap '"${as[@]}" "$PGBIN/pg_ctl -D $PGDIR/data -m fast stop >/dev/null" || true; rm -rf "$PGDIR"' EXIT
    export TESSERA_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PGPORT/postgres"
}

# Seeds of the randomized sync test (each takes ~0.3 s).
export TESSERA_SYNC_SEEDS=${TESSERA_SYNC_SEEDS:-25}

if [ -z "${TESSERA_TEST_POSTGRES:-}" ]; then
    start_postgres
fi

LOG=$(mktemp /tmp/tessera-test.XXXXXX)
TIMES=()
began=$SECONDS
set +e
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
TIMES+=("cargo test (build and run): $((SECONDS - began)) s")
# The README's run command as a newcomer types it, then the
# interoperability and browser suites (they install Node.js, npm and
# Chromium from Debian when missing): TUS with curl and tus-js-client, and
# the web UI in headless Chromium; sync into a folder that ignores case
# (FUSE); schemathesis against the API description; and the system as a
# cluster (pg_auto_failover, three instances, haproxy) with instances and
# the database primary killed.
for suite in scripts/first-run-test.sh scripts/tus-test.sh scripts/web-test.sh scripts/casefold-test.sh scripts/api-fuzz-test.sh scripts/cluster-test.sh; do
    began=$SECONDS
    "$suite" 2>&1 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    TIMES+=("$(basename "$suite" .sh): $((SECONDS - began)) s")
done
set -e
# One closing line for the whole run, summed over every test binary and suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^(first-run|tus|web|casefold|api-fuzz|cluster): [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 }
     END { printf "%d passed, %d failed\n", p, f }' "$LOG"
printf 'time: %s\n' "${TIMES[@]}" "total: $SECONDS s"
rm -f "$LOG"
exit "$status"
