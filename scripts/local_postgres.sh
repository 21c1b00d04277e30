#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1, for the scale-out tests and `make server`.
#   scripts/local_postgres.sh start DIR [PORT]   prints the SQLAlchemy URL of database `rnnlab`
#   scripts/local_postgres.sh stop DIR
# Needs Debian's `postgresql` package. As root the cluster runs as the `postgres` user,
# since PostgreSQL refuses to run as root; DIR must then be reachable by that user (/tmp is).
set -euo pipefail
action=${1:?usage: $0 start|stop DIR [PORT]}
dir=$(realpath -m "${2:?usage: $0 start|stop DIR [PORT]}")
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ]; then
    echo "no PostgreSQL server here: apt-get install -y postgresql" >&2
    exit 1
fi
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $action in
start)
    port=${3:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        # Trust on loopback only: a test cluster that lives as long as the test run.
        as_owner "$bin/initdb" -D "$dir/data" -U rnnlab -A trust >"$dir/initdb.log"
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
            -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null
    fi
    port=$(sed -n 4p "$dir/data/postmaster.pid")
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U rnnlab -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'rnnlab'" | grep -q 1 ||
        as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U rnnlab rnnlab
    echo "postgresql+psycopg://rnnlab@127.0.0.1:$port/rnnlab"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
