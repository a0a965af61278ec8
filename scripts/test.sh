#!/usr/bin/env bash
# Runs every test: unit tests, and the end-to-end suite on SQLite and on a
# throwaway PostgreSQL cluster that this script starts on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

# Seeds of the randomized sync test (each takes ~0.3 s).
export TESSERA_SYNC_SEEDS=${TESSERA_SYNC_SEEDS:-25}

if [ -z "${TESSERA_TEST_POSTGRES:-}" ]; then
    start_postgres
    trap stop_postgres EXIT
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
# (FUSE); schemathesis against the API description; a Prometheus scrape
# of /metrics, linted by promtool; the command line in a pseudo-terminal
# (prompts, progress bars, Ctrl-C); the .deb built with cargo-deb,
# installed and started as its systemd unit starts it; the end-to-end suite again with every
# block store on S3 (SeaweedFS, installed with pip); and the system as a
# cluster (pg_auto_failover, three instances, haproxy) with instances and
# the database primary killed.
for suite in scripts/first-run-test.sh scripts/tus-test.sh scripts/web-test.sh scripts/casefold-test.sh scripts/api-fuzz-test.sh scripts/metrics-test.sh scripts/pty-test.sh scripts/deb-test.sh scripts/s3-test.sh scripts/cluster-test.sh; do
    began=$SECONDS
    "$suite" 2>&1 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    TIMES+=("$(basename "$suite" .sh): $((SECONDS - began)) s")
done
set -e
# One closing line for the whole run, summed over every test binary and
# suite. The S3 suite's own cargo results fall between its two marker lines
# and are counted once, from its closing line.
awk '/^s3: begin$/ { in_s3 = 1 }
     /^test result:/ && !in_s3 { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^(first-run|tus|web|casefold|api-fuzz|metrics|pty|deb|s3|cluster): [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; in_s3 = 0 }
     END { printf "%d passed, %d failed\n", p, f }' "$LOG"
printf 'time: %s\n' "${TIMES[@]}" "total: $SECONDS s"
rm -f "$LOG"
exit "$status"
