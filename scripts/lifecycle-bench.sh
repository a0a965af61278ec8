#!/usr/bin/env bash
# Storage lifecycle figures, on the release binary and real files:
#  - store size after uploading, deleting and purging a large file, then
#    collection, against the baseline before the upload;
#  - collection and scrub throughput;
#  - upload time with one local replica against none.
# Usage: scripts/lifecycle-bench.sh [MIB]   (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
BIN=${TESSERA_BIN:-target/release/tessera}
[ -x "$BIN" ] || cargo build --release -p tessera
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
export TESSERA_ADMIN_PASSWORD=bench-password-1234 TESSERA_LOG=warn

head -c "$((MIB << 20))" /dev/urandom >"$WORK/big.bin"
# What the store already holds: a tenth of the upload, kept throughout.
head -c "$(((MIB << 20) / 10))" /dev/urandom >"$WORK/keep.bin"

now() { date +%s.%N; }
# Bytes in the store's files (the folders of its layout stay).
du_bytes() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }

# serve NAME [FLAGS...]: starts a server in $WORK/NAME, logs in, sets $URL.
serve() {
    local name=$1
    shift
    mkdir -p "$WORK/$name"
    "$BIN" serve --data-dir "$WORK/$name/data" --listen 127.0.0.1:0 --gc-grace-secs 0 "$@" \
        >"$WORK/$name/out" 2>&1 &
    for _ in $(seq 100); do
        URL=$(sed -n 's/^Tessera is listening on //p' "$WORK/$name/out")
        [ -n "$URL" ] && break
        sleep 0.1
    done
    export TESSERA_CONFIG_DIR="$WORK/$name/cfg"
    echo "$TESSERA_ADMIN_PASSWORD" | "$BIN" login --server "$URL" --user admin --password-stdin >/dev/null
}

run_worker() { "$BIN" admin workers run "$1" --json; }
done_of() { sed -n 's/.*"last_done": \([0-9]*\).*/\1/p'; }

serve plain
"$BIN" put "$WORK/keep.bin" /keep.bin >/dev/null
run_worker gc >/dev/null
base=$(du_bytes "$WORK/plain/data/blocks")
t0=$(now)
"$BIN" put "$WORK/big.bin" /big.bin >/dev/null
t1=$(now)
grown=$(du_bytes "$WORK/plain/data/blocks")
t2=$(now)
scrubbed=0
while :; do
    n=$(run_worker scrub | done_of)
    scrubbed=$((scrubbed + n))
    [ "$n" -lt 200 ] && break
done
t3=$(now)
"$BIN" rm /big.bin >/dev/null
"$BIN" trash empty --yes >/dev/null
t4=$(now)
collected=$(run_worker gc | done_of)
t5=$(now)
after=$(du_bytes "$WORK/plain/data/blocks")
kill %1
wait %1 2>/dev/null || true

serve replica --replica-stores "file://$WORK/replica/copy"
t6=$(now)
"$BIN" put "$WORK/big.bin" /big.bin >/dev/null
t7=$(now)

awk -v mib="$MIB" -v base="$base" -v grown="$grown" -v after="$after" \
    -v up="$(echo "$t1 - $t0" | bc)" -v scrub="$(echo "$t3 - $t2" | bc)" -v blocks="$scrubbed" \
    -v gc="$(echo "$t5 - $t4" | bc)" -v collected="$collected" -v rup="$(echo "$t7 - $t6" | bc)" 'BEGIN {
    printf "store: baseline %d B, after the upload %.1f MiB, after delete+purge+gc %d B (%+.3f%% of the baseline)\n",
        base, grown / 1048576, after, (after - base) * 100 / base
    printf "upload %d MiB: %.2f s (%.0f MiB/s); with one replica: %.2f s (%.0f MiB/s), %.2fx\n",
        mib, up, mib / up, rup, mib / rup, rup / up
    printf "scrub: %d blocks, %.1f MiB in %.2f s (%.0f MiB/s)\n", blocks, grown / 1048576, scrub, grown / 1048576 / scrub
    printf "gc: %d blocks collected plus objects deleted in %.2f s (%.0f MiB/s freed)\n", collected, gc, (grown - after) / 1048576 / gc
}'
