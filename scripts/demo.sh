#!/usr/bin/env bash
# Runs the product: builds and installs mail_gateway, starts a local PostgreSQL 15 cluster in
# .demo/ with the extension in shared_preload_libraries, creates the extension in a demo ERP
# database `erp`, and shows the gateway at work: server choice, sending, DKIM, and the round
# trip through a real Dovecot (tests/src/bin/demo_roundtrip.rs). `scripts/demo.sh stop` stops
# the cluster.
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

stop_smtp() { [ -f "$DIR/smtp.pid" ] && kill "$(cat "$DIR/smtp.pid")" 2>/dev/null; rm -f "$DIR/smtp.pid"; }

if [ "${1:-}" = stop ]; then
  stop_smtp
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

# A local SMTP server standing in for the company's relay: it records what it receives.
stop_smtp
: > "$DIR/received.jsonl"
/usr/bin/python3 tests/servers/smtp_server.py --port 2525 --out "$DIR/received.jsonl" > "$DIR/smtp.log" 2>&1 &
echo $! > "$DIR/smtp.pid"
for _ in $(seq 1 50); do grep -q READY "$DIR/smtp.log" && break; sleep 0.1; done

psql_erp -d postgres -qtc "SELECT 1 FROM pg_database WHERE datname = 'erp'" | grep -q 1 \
  || psql_erp -d postgres -qc "CREATE DATABASE erp"
psql_erp -d erp -qc "SET client_min_messages = warning; DROP EXTENSION IF EXISTS mail_gateway; CREATE EXTENSION mail_gateway"
# The launcher starts erp's workers when CREATE EXTENSION commits: wait until they are
# connected, so the mail queued below is sent while we watch.
for _ in $(seq 1 60); do
  [ "$(psql_erp -d postgres -qtAc "SELECT count(*) FROM pg_stat_activity
        WHERE datname = 'erp' AND backend_type IN ('mail_gateway worker', 'mail_gateway fetcher')")" = 2 ] && break
  sleep 0.5
done

psql_erp -d erp -q <<'SQL'
\pset footer off
SET client_min_messages = warning;
SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, from_filter, priority)
VALUES ('company relay', '127.0.0.1', 2525, 'none', 'mycompany.com', 10),
       ('marketing', '127.0.0.1', 2526, 'none', 'news.mycompany.com', 50);
SELECT mail_gateway.set_parameter('mass_mailing.outgoing_mail_server', 'marketing');
\echo '== System parameters'
TABLE mail_gateway.parameter;
\echo '== Outgoing servers'
SELECT id, name, host, port, encryption, auth, from_filter, priority FROM mail_gateway.outgoing_server;
\echo '== Choosing the server and the From (find_outgoing_server)'
SELECT f.email_from, f.kind, s.server_name, s.smtp_from, s.header_from
FROM (VALUES ('"Admin" <admin@example.com>', 'transactional'),
             ('Sales <sales@mycompany.com>', 'transactional'),
             ('"Jérôme Müller" <jm@customer.example>', 'transactional'),
             ('Newsletter <hello@news.mycompany.com>', 'mass')) AS f(email_from, kind),
     LATERAL mail_gateway.find_outgoing_server(f.email_from, f.kind) AS s;
\echo '== A malformed From gives a clear error'
\set ON_ERROR_STOP 0
SELECT * FROM mail_gateway.find_outgoing_server('Admin <admin@example.com');
\set ON_ERROR_STOP 1
\echo '== Test Connection'
SELECT mail_gateway.test_outgoing_server('company relay');
\echo '== Sending: one mail committed, one rolled back, one refused by the server'
SELECT mail_gateway.create_dkim_key('mycompany.com') AS "DNS record to publish";
SELECT mail_gateway.send_mail('"Admin" <admin@example.com>', ARRAY['"Ann" <ann@customer.example>'],
       'Your quotation SO042', body_html => '<p>Hello Ann, here is your quotation.</p>',
       bcc => ARRAY['archive@mycompany.com']) AS queued;
BEGIN;
SELECT mail_gateway.send_mail('sales@mycompany.com', ARRAY['never@customer.example'], 'rolled back') AS queued_then_rolled_back;
ROLLBACK;
SELECT mail_gateway.send_mail('sales@mycompany.com', ARRAY['reject@customer.example'], 'Refused') AS queued;
SELECT pg_sleep(1.5);
SELECT id, state, server_id, smtp_from, header_from, failure_type, left(failure_reason, 70) AS failure_reason
FROM mail_gateway.mail ORDER BY id;
TABLE mail_gateway.queue_status;
SQL
echo
echo "== What the SMTP server received (envelope, then the headers)"
/usr/bin/python3 - "$DIR/received.jsonl" <<'PY'
import base64, json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    print("MAIL FROM:", m["mail_from"], " RCPT TO:", ", ".join(m["rcpt_tos"]))
    head = base64.b64decode(m["data"]).decode().split("\r\n\r\n")[0]
    for h in head.split("\r\n"):
        if h.split(":")[0] in ("From", "To", "Subject", "Message-ID", "Date") or h.startswith("DKIM-Signature"):
            print("   ", h[:110])
PY
echo
echo "== The round trip: chatter → SMTP → a reply in a real IMAP mailbox → the thread → relayed"
cargo build --release -q -p mail_gateway_tests --bin demo_roundtrip
./target/release/demo_roundtrip "$PORT" "$DIR/received.jsonl"
echo
echo "== The workers (pg_stat_activity, worker_status): a launcher, and erp's, as mail_gateway_worker"
psql_erp -d erp -P footer=off -c "SELECT pid, backend_type, datname, usename FROM pg_stat_activity WHERE backend_type LIKE 'mail_gateway%' ORDER BY pid"
psql_erp -d erp -P footer=off -c "SELECT database, state, senders, fetcher FROM mail_gateway.worker_status"
echo "== Worker log"
grep -E 'mail_gateway (launcher|worker|fetcher|sender [0-9]+) (started|stopped)|message\(s\) stored' "$DIR/server.log" | tail -n 5
cat <<EOF

The cluster keeps running. Connect:  $PG_BIN/psql -h 127.0.0.1 -p $PORT -U postgres erp
Stop it:                             scripts/demo.sh stop
EOF
