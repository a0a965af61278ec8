# Sourced by the test scripts. start_postgres starts a throwaway PostgreSQL
# cluster on loopback (installing PostgreSQL from Debian when missing) and
# exports TESSERA_TEST_POSTGRES; stop_postgres stops and removes it, and
# does nothing when none was started.

# Below the kernel's ephemeral range (32768 and up), where an outgoing
# connection could hold the port, and below the other scripts' 20000 and up.
PGPORT=${TESSERA_TEST_PGPORT:-$((12000 + RANDOM % 8000))}
PGDIR=
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
    export TESSERA_TEST_POSTGRES="postgres://postgres@127.0.0.1:$PGPORT/postgres"
}

stop_postgres() {
    [ -n "$PGDIR" ] || return 0
    "${as[@]}" "$PGBIN/pg_ctl -D $PGDIR/data -m fast stop >/dev/null" || true
    rm -rf "$PGDIR"
    PGDIR=
}
