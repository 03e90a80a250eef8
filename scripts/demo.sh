#!/usr/bin/env bash
# Runs the product: builds and installs mail_gateway, starts a local PostgreSQL 15 cluster in
# .demo/ with the extension in shared_preload_libraries, creates the extension in a demo ERP
# database `erp`, and shows what works so far. `scripts/demo.sh stop` stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_BIN=/usr/lib/postgresql/15/bin
PORT=${MG_DEMO_PORT:-54329}
DIR=$PWD/.demo
DATA=$DIR/data

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
psql_erp() { "$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 "$@"; }

if [ "${1:-}" = stop ]; then
  as_postgres "$PG_BIN/pg_ctl" -D "$DATA" -m fast stop
  exit 0
fi

bash scripts/setup.sh
echo "==> building and installing mail_gateway (release)"
cargo pgrx install --release --pg-config "$PG_BIN/pg_config"

mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
if [ ! -f "$DATA/PG_VERSION" ]; then
  as_postgres "$PG_BIN/initdb" -D "$DATA" -U postgres -A trust --no-locale -E UTF8 >/dev/null
  cat >> "$DATA/postgresql.auto.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'mail_gateway'
mail_gateway.database = 'erp'
CONF
fi
# A restart loads the freshly installed library.
if as_postgres "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_postgres "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
fi
as_postgres "$PG_BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w start >/dev/null

psql_erp -d postgres -qtc "SELECT 1 FROM pg_database WHERE datname = 'erp'" | grep -q 1 \
  || psql_erp -d postgres -qc "CREATE DATABASE erp"

psql_erp -d erp -q <<'SQL'
\pset footer off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS mail_gateway;
CREATE EXTENSION mail_gateway;
SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, from_filter, priority)
VALUES ('company relay', '127.0.0.1', 2525, 'none', 'mycompany.com', 10),
       ('marketing', '127.0.0.1', 2526, 'none', 'news.mycompany.com', 50);
SELECT mail_gateway.set_parameter('mass_mailing.outgoing_mail_server', 'marketing');
\echo '== System parameters'
TABLE mail_gateway.parameter;
\echo '== Outgoing servers'
SELECT id, name, host, port, encryption, auth, from_filter, priority FROM mail_gateway.outgoing_server;
\echo '== Choosing the server and the From (SPEC §2.3)'
SELECT f.email_from, f.kind, s.server_name, s.smtp_from, s.header_from
FROM (VALUES ('"Admin" <admin@example.com>', 'transactional'),
             ('Sales <sales@mycompany.com>', 'transactional'),
             ('"Jérôme Müller" <jm@customer.example>', 'transactional'),
             ('Newsletter <hello@news.mycompany.com>', 'mass')) AS f(email_from, kind),
     LATERAL mail_gateway.find_outgoing_server(f.email_from, f.kind) AS s;
\echo '== A malformed From gives a clear error'
\set ON_ERROR_STOP 0
SELECT * FROM mail_gateway.find_outgoing_server('Admin <admin@example.com');
SQL
echo
echo "== The worker (pg_stat_activity)"
for _ in $(seq 1 60); do
  psql_erp -d erp -qtAc "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'mail_gateway worker'" | grep -q 1 && break
  sleep 0.5
done
psql_erp -d erp -P footer=off -c "SELECT pid, backend_type, datname, backend_start FROM pg_stat_activity WHERE backend_type LIKE 'mail_gateway%'"
echo "== Worker log"
grep 'mail_gateway worker' "$DIR/server.log" | tail -n 3
cat <<EOF

The cluster keeps running. Connect:  $PG_BIN/psql -h 127.0.0.1 -p $PORT -U postgres erp
Stop it:                             scripts/demo.sh stop
EOF
