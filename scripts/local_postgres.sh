#!/usr/bin/env bash
# A local PostgreSQL cluster on 127.0.0.1, for the scale-out tests and `make postgres`.
#   scripts/local_postgres.sh start DIR [PORT] [--password]
#       prints the SQLAlchemy URL of database `rnnlab`
#   scripts/local_postgres.sh stop DIR
# Without --password (the tests, CI) the cluster trusts every connection on the loopback: a
# throwaway that lives as long as the test run. With --password (`make postgres`) it asks for
# one (SCRAM-SHA-256), generated once and kept in DIR/password (mode 0600); the URL carries it.
# How a cluster serves several machines: the README's PostgreSQL section. A cluster keeps the
# way it was made: its DIR has a password file or it has none.
# Needs Debian's `postgresql` package. As root the cluster runs as the `postgres` user,
# since PostgreSQL refuses to run as root; DIR must then be reachable by that user (/tmp is).
set -euo pipefail
usage="usage: $0 start DIR [PORT] [--password] | stop DIR"
action=${1:?$usage}
dir=$(realpath -m "${2:?$usage}")
shift 2
port='' secured=''
for argument in "$@"; do
    case $argument in
    --password) secured=1 ;;
    *) port=$argument ;;
    esac
done
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ]; then
    echo "no PostgreSQL server here: apt-get install -y postgresql" >&2
    exit 1
fi
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
password_file=$dir/password

case $action in
start)
    port=${port:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
    mkdir -p "$dir"
    chmod 0700 "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        if [ -n "$secured" ]; then
            (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$password_file")
            if [ "$(id -u)" = 0 ]; then chown postgres: "$password_file"; fi
            as_owner "$bin/initdb" -D "$dir/data" -U rnnlab -A scram-sha-256 \
                --pwfile="$password_file" >"$dir/initdb.log"
        else
            as_owner "$bin/initdb" -D "$dir/data" -U rnnlab -A trust >"$dir/initdb.log"
        fi
    elif [ -n "$secured" ] && [ ! -f "$password_file" ]; then
        echo "$dir holds a cluster that trusts the loopback (made for the tests): choose another" \
            "folder (POSTGRES_DIR=...) for one with a password" >&2
        exit 1
    fi
    if ! as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
            -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null
    fi
    port=$(sed -n 4p "$dir/data/postmaster.pid")
    credentials=rnnlab
    if [ -f "$password_file" ]; then
        PGPASSWORD=$(cat "$password_file")
        export PGPASSWORD  # psql and createdb below read it; never on a command line
        credentials=rnnlab:$PGPASSWORD
    fi
    as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U rnnlab -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'rnnlab'" | grep -q 1 ||
        as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U rnnlab rnnlab
    echo "postgresql+psycopg://$credentials@127.0.0.1:$port/rnnlab"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
