#!/usr/bin/env bash
# Start (or stop) a throwaway PostgreSQL cluster for the tests: trust auth, 127.0.0.1 only, in a temporary folder.
#
# Why: the storage tests run against a real PostgreSQL server. This script needs only the PostgreSQL
# server binaries (Debian: `apt-get install postgresql`); it never touches a system cluster.
#
# Usage (developers, from the repository root):
#   eval "$(.ci/start-postgres.sh)"     # start; exports EDGESEARCH_TEST_POSTGRES_URL and friends into this shell
#   .venv/bin/python -m pytest tests/searcher
#   .ci/start-postgres.sh stop          # stop the server and delete its folder (reads the exported variables)
#
# `start` prints only `export NAME=VALUE` lines on stdout (everything else goes to stderr), so it can be eval'ed:
#   EDGESEARCH_TEST_POSTGRES_URL  postgresql+psycopg://postgres@127.0.0.1:PORT/edgesearch_test
#   EDGESEARCH_TEST_PG_BIN        folder holding initdb / pg_ctl (tests that restart the server use it)
#   EDGESEARCH_TEST_PG_DATA       the cluster's data folder (`pg_ctl -D "$EDGESEARCH_TEST_PG_DATA" restart`)
#   EDGESEARCH_TEST_PG_USER       the OS user that owns the cluster: run pg_ctl as this user (postgres when run as root)
#   EDGESEARCH_TEST_PG_DIR        the temporary folder holding everything (data, socket, server.log)
# Settings (port, addresses, socket folder) are written into the cluster's postgresql.conf, so a plain
# `pg_ctl -D DATA start|restart` brings the server back on the same port.
#
# Environment: EDGESEARCH_PG_PORT (first port to try, default 55432), EDGESEARCH_PG_MAX_CONNECTIONS (default 200;
# the coordination benchmark runs 128 workers against 50), EDGESEARCH_TEST_PG_BIN (binaries folder;
# default: the newest /usr/lib/postgresql/*/bin, else the folder of `pg_ctl` on PATH).
set -euo pipefail

log() { echo "start-postgres: $*" >&2; }

# Run a command as the cluster's owner: PostgreSQL refuses to run as root, so root hands over to `postgres`.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop() {
    local bin=${EDGESEARCH_TEST_PG_BIN:-} data=${EDGESEARCH_TEST_PG_DATA:-} dir=${EDGESEARCH_TEST_PG_DIR:-}
    if [[ -z $data || -z $dir ]]; then
        log "nothing to stop (EDGESEARCH_TEST_PG_DATA / EDGESEARCH_TEST_PG_DIR are not set)"
        return 0
    fi
    if [[ -f $data/postmaster.pid ]]; then
        as_owner "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || log "pg_ctl stop failed"
    fi
    rm -rf -- "$dir"
    log "stopped and removed $dir"
}

find_bin() {
    if [[ -n ${EDGESEARCH_TEST_PG_BIN:-} ]]; then
        echo "$EDGESEARCH_TEST_PG_BIN"
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z $found ]] && command -v pg_ctl >/dev/null 2>&1; then
        found=$(dirname "$(command -v pg_ctl)")
    fi
    echo "$found"
}

# True when something already listens on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local bin
    bin=$(find_bin)
    if [[ -z $bin || ! -x $bin/initdb || ! -x $bin/pg_ctl ]]; then
        log "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH)."
        log "install them, e.g. on Debian/Ubuntu: sudo apt-get install postgresql"
        exit 1
    fi
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        log "running as root but there is no 'postgres' user to own the cluster (the postgresql package creates it)"
        exit 1
    fi

    local dir data port
    dir=$(mktemp -d "${TMPDIR:-/tmp}/edgesearch-pg.XXXXXX")
    data=$dir/data
    # If anything below fails, stop what was started and remove the folder: the caller never learns where it was.
    EDGESEARCH_TEST_PG_BIN=$bin EDGESEARCH_TEST_PG_DATA=$data EDGESEARCH_TEST_PG_DIR=$dir
    trap stop EXIT
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$dir"
    fi

    as_owner "$bin/initdb" -D "$data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; false; }

    port=${EDGESEARCH_PG_PORT:-55432}
    while port_busy "$port"; do
        port=$((port + 1))
    done
    # Throwaway cluster: durability off for speed; listen on loopback only; socket inside our folder.
    as_owner tee -a "$data/postgresql.conf" >/dev/null <<CONF

# --- edgesearch test cluster (.ci/start-postgres.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = ${EDGESEARCH_PG_MAX_CONNECTIONS:-200}
CONF

    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/server.log" >&2; false; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres edgesearch_test
    trap - EXIT
    log "PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') listening on 127.0.0.1:$port (data in $data)"

    printf 'export EDGESEARCH_TEST_POSTGRES_URL=%q\n' "postgresql+psycopg://postgres@127.0.0.1:$port/edgesearch_test"
    printf 'export EDGESEARCH_TEST_PG_BIN=%q\n' "$bin"
    printf 'export EDGESEARCH_TEST_PG_DATA=%q\n' "$data"
    printf 'export EDGESEARCH_TEST_PG_USER=%q\n' "$([[ $(id -u) -eq 0 ]] && echo postgres || id -un)"
    printf 'export EDGESEARCH_TEST_PG_DIR=%q\n' "$dir"
}

case ${1:-start} in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 [start|stop]" >&2
        exit 2
        ;;
esac
