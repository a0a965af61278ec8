#!/usr/bin/env bash
# Tessera beside restic on two backup-like workloads, each run from nothing
# in a temporary folder on the same disk:
#
#   next:  a source tree replaced by its next release (Django 5.0.9 by
#          5.1.3, the sdists from the Python package index: about 6,800
#          files, 57 MB, a thousand of them changed, added or removed);
#   edits: 10,000 small real files (from /usr/include and /usr/share/doc),
#          then every 10th of them edited (a line inserted in the middle).
#
# For each: the time of the first copy, the time of the change, and what
# the store holds after both (restic: its repository; Tessera: the
# server's data folder, blocks and database). Tessera runs `tessera serve`
# (SQLite, blocks in a local folder) on loopback and `tessera sync DIR
# --once`; restic backs up to a local repository (its default compression,
# and its maximum for the store alone). Tessera's store is also measured
# after its background recompression, which the bench runs at once
# (`tessera admin workers run recompress`) instead of an hour later.
#
#   bench/backup.sh              # 3 runs, prints a markdown table
#   RUNS=1 bench/backup.sh       # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}

if ! command -v restic >/dev/null; then
    echo "installing restic"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends restic >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends restic >/dev/null; }
fi
cargo build --release --locked --quiet -p tessera
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/tessera

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tessera-bench
mkdir -p "$CACHE"
for v in 5.0.9 5.1.3; do
    if [ ! -d "$CACHE/django-$v" ]; then
        python3 -m pip download --quiet --no-deps --no-binary :all: "django==$v" -d "$CACHE" >/dev/null 2>&1 ||
            [ -f "$CACHE/Django-$v.tar.gz" ] || [ -f "$CACHE/django-$v.tar.gz" ]
        mkdir -p "$CACHE/django-$v.part"
        tar xzf "$CACHE"/[Dd]jango-"$v".tar.gz -C "$CACHE/django-$v.part" --strip-components=1
        mv "$CACHE/django-$v.part" "$CACHE/django-$v"
    fi
done
if [ ! -d "$CACHE/small-10000" ]; then
    mkdir -p "$CACHE/small-10000.part"
    # The first 10,000 regular files of up to 256 KiB, in name order.
    find /usr/include /usr/share/doc -type f -size -257k -print0 | sort -z >"$CACHE/small.list"
    head -z -n 10000 "$CACHE/small.list" | xargs -0 cp --parents -t "$CACHE/small-10000.part"
    rm "$CACHE/small.list"
    mv "$CACHE/small-10000.part" "$CACHE/small-10000"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-backup-bench.XXXXXX")
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

# Every 10th file of $1 (in name order) gets a line inserted in its middle.
edit_every_tenth() {
    python3 - "$1" <<'PY'
import os, sys
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) if ".tessera" not in d.split(os.sep) for f in fs)
for p in files[9::10]:
    with open(p, "rb") as fh:
        data = fh.read()
    mid = data.find(b"\n", len(data) // 2) + 1
    with open(p, "wb") as fh:
        fh.write(data[:mid] + b"edited: a line of the benchmark's own\n" + data[mid:])
PY
}

# change $dir: the workload's second step, on the folder being synced.
change() {
    case $1 in
    next)
        # The folder stays (with Tessera's state in it); what it holds is
        # replaced, every file new on disk.
        find "$2" -mindepth 1 -maxdepth 1 ! -name .tessera -exec rm -rf {} +
        cp -a "$CACHE/django-5.1.3/." "$2/"
        ;;
    edits) edit_every_tenth "$2" ;;
    esac
}

first_tree() {
    case $1 in
    next) echo "$CACHE/django-5.0.9" ;;
    edits) echo "$CACHE/small-10000" ;;
    esac
}

run_restic() { # workload [compression] -> "first change bytes"
    local w=$1 compression=${2:-auto} dir=$WORK/restic/tree repo=$WORK/restic/repo
    rm -rf "$WORK/restic" && mkdir -p "$WORK/restic"
    export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic/cache
    restic init --repo "$repo" -q >/dev/null
    cp -a "$(first_tree "$w")" "$dir"
    sync
    local t=$(now)
    restic backup --repo "$repo" --compression "$compression" -q "$dir" >/dev/null
    local first=$(since "$t")
    change "$w" "$dir"
    sync
    t=$(now)
    restic backup --repo "$repo" --compression "$compression" -q "$dir" >/dev/null
    local second=$(since "$t")
    echo "$first $second $(du -sb "$repo" | cut -f1)"
}

run_restic_max() { run_restic "$1" max; }

run_tessera() { # workload -> "first change bytes blocks recompression bytes blocks"
    local w=$1 dir=$WORK/tessera/tree data=$WORK/tessera/data cfg=$WORK/tessera/cfg
    rm -rf "$WORK/tessera" && mkdir -p "$cfg"
    local port=$((20000 + RANDOM % 20000))
    serve() { # [flags]
        TESSERA_ADMIN_PASSWORD=bench-password TESSERA_LOG=warn \
            "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$data" "$@" >>"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        curl -fs --retry 30 --retry-connrefused --retry-delay 1 --retry-max-time 30 \
            "http://127.0.0.1:$port/healthz" >/dev/null
    }
    # Stopped, so that the database's log is folded into it and the store
    # is measured as it rests.
    stop() { kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=; }
    serve
    echo bench-password | TESSERA_CONFIG_DIR=$cfg TESSERA_LOG=warn \
        "$BIN" login --server "http://127.0.0.1:$port" --user admin --password-stdin >/dev/null
    cp -a "$(first_tree "$w")" "$dir"
    sync
    local t=$(now)
    TESSERA_CONFIG_DIR=$cfg TESSERA_LOG=warn "$BIN" sync "$dir" --once >>"$WORK/sync.log" 2>&1
    local first=$(since "$t")
    change "$w" "$dir"
    sync
    t=$(now)
    TESSERA_CONFIG_DIR=$cfg TESSERA_LOG=warn "$BIN" sync "$dir" --once >>"$WORK/sync.log" 2>&1
    local second=$(since "$t")
    stop
    local stored="$(du -sb "$data" | cut -f1) $(du -sb "$data/blocks" | cut -f1)"
    # The server's background recompression, run now instead of an hour
    # later, until a step finds nothing left; then collection deletes the
    # objects it replaced (a grace of 0 s: nothing reads them any more).
    serve --recompress-after-secs 0 --gc-grace-secs 0
    t=$(now)
    local state=busy steps=0
    while [ "$state" = busy ] && ((steps++ < 100000)); do
        state=$(TESSERA_CONFIG_DIR=$cfg "$BIN" admin workers --json run recompress |
            sed -n 's/.*"state": "\([a-z]*\)".*/\1/p')
    done
    [ "$state" = idle ] || { echo "recompress did not finish: $state" >&2; exit 1; }
    local recompressed=$(since "$t")
    for _ in 1 2; do TESSERA_CONFIG_DIR=$cfg "$BIN" admin workers run gc >/dev/null; done
    stop
    echo "$first $second $stored $recompressed $(du -sb "$data" | cut -f1) $(du -sb "$data/blocks" | cut -f1)"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "restic: $(restic version | cut -d' ' -f2); tessera: $("$BIN" --version | cut -d' ' -f2); $RUNS runs; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
mb() { echo "scale=1; $1 / 1000000" | bc; }
for w in next edits; do
    : >"$WORK/$w.restic" && : >"$WORK/$w.restic_max" && : >"$WORK/$w.tessera"
    for run in $(seq "$RUNS"); do
        # The tools take turns going first.
        if ((run % 2)); then tools="restic restic_max tessera"; else tools="tessera restic_max restic"; fi
        for tool in $tools; do
            "run_$tool" "$w" >>"$WORK/$w.$tool"
        done
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| Workload | step | restic | Tessera | Tessera/restic |"
echo "|---|---|---:|---:|---:|"
for w in next edits; do
    col() { cut -d' ' -f"$1" "$WORK/$w.$2" | median; }
    for c in 1 2 3; do
        r=$(col "$c" restic)
        t=$(col "$c" tessera)
        case $c in
        1) step="first copy (s)" ;;
        2) step="the change (s)" ;;
        3) step="store after both (MB)"; r=$(mb "$r"); t=$(mb "$t") ;;
        esac
        printf '| %s | %s | %.2f | %.2f | %s |\n' "$w" "$step" "$r" "$t" "$(echo "scale=2; $t / $r" | bc)"
    done
    printf '| %s | of which blocks / metadata (MB) | | %.1f / %.1f | |\n' "$w" \
        "$(mb "$(col 4 tessera)")" "$(mb "($(col 3 tessera) - $(col 4 tessera))")"
    r=$(col 3 restic)
    t=$(col 6 tessera)
    printf '| %s | store after the server recompressed (MB) | %.1f | %.1f | %s |\n' "$w" \
        "$(mb "$r")" "$(mb "$t")" "$(echo "scale=2; $t / $r" | bc)"
    printf '| %s | of which blocks / metadata (MB) | | %.1f / %.1f | |\n' "$w" \
        "$(mb "$(col 7 tessera)")" "$(mb "($(col 6 tessera) - $(col 7 tessera))")"
    printf '| %s | the recompression (s) | | %.2f | |\n' "$w" "$(col 5 tessera)"
    r=$(col 3 restic_max)
    printf '| %s | restic --compression max: store after both (MB) | %.1f | %.1f | %s |\n' "$w" \
        "$(mb "$r")" "$(mb "$t")" "$(echo "scale=2; $t / $r" | bc)"
done
for w in next edits; do
    for tool in restic restic_max tessera; do
        echo "runs ($w, $tool): $(tr '\n' ';' <"$WORK/$w.$tool")"
    done
done
