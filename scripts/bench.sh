#!/usr/bin/env bash
# Every benchmark, as one table (never timed tests). Builds a release, starts its own cluster
# and Postfix's smtp-sink on 127.0.0.1, and measures:
#   1. mails/s from the queue into smtp-sink, without DKIM, with RSA and with Ed25519 DKIM,
#      next to smtp-source sending to the same sink in the same run;
#   2. commit-to-delivery latency (p50, p99) of single mails on an idle queue;
#   3. the cost of send_mail() in a transaction next to a plain INSERT of the same row;
#   4. inbound: process_message() msgs/s (5 KB, 1 MB), routed replies and alias creations,
#      IMAP fetch msgs/s from Dovecot, the fetcher's peak memory for a 50 MB message
#      (tests/src/bin/bench_inbound.rs), and the bounce corpus score (bounce_corpus).
# Progress and details go to stderr; the table (Markdown, as in docs/BENCHMARKS.md) to stdout.
# Usage: scripts/bench.sh [MAILS]   (default 20000; LATENCY_MAILS=200, FETCH=5000)
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2

MAILS=${1:-20000}
SENDERS=${SENDERS:-2}
BATCH=${BATCH:-500}
B=/usr/lib/postgresql/15/bin

bash scripts/setup.sh >/dev/null
echo "building the release build …"
cargo pgrx install --release --pg-config "$B/pg_config" >/dev/null 2>&1

as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

DIR=$(mktemp -d /tmp/mgbench.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
export BENCH_ROWS=$DIR/rows
: >"$BENCH_ROWS"
# One row of the table: what, figure, target.
row() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$BENCH_ROWS"; }
PGPORT=$(free_port)
SINKPORT=$(free_port)
cleanup() {
  as_postgres "$B/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${SINK:-}" ] && kill "$SINK" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

as_postgres "$B/initdb" -D "$DIR/data" -U postgres -A trust --no-locale -E UTF8 >/dev/null
cat >> "$DIR/data/postgresql.auto.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'mail_gateway'
mail_gateway.senders = $SENDERS
mail_gateway.send_batch_size = $BATCH
shared_buffers = '512MB'
synchronous_commit = on
CONF
as_postgres "$B/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
psql() { "$B/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }

# Postfix's SMTP sink: accepts everything, stores nothing (as root it must drop to a user).
sink_user=(); [ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)
/usr/sbin/smtp-sink "${sink_user[@]}" 127.0.0.1:"$SINKPORT" 1000 &
SINK=$!
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/"$SINKPORT") 2>/dev/null && break; sleep 0.1; done
kill -0 "$SINK" 2>/dev/null || { echo "smtp-sink did not start" >&2; exit 1; }

psql -d postgres <<SQL >/dev/null
CREATE EXTENSION mail_gateway;
SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
SELECT mail_gateway.set_parameter('mail.send.daily_limit', '0');
INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption) VALUES ('sink', '127.0.0.1', $SINKPORT, 'none');
SQL

# Queues MAILS mails in one transaction, then times until the last is sent.
run_queue() {
  local label=$1 domain=$2 target=${3:-}
  psql -d postgres -c "TRUNCATE mail_gateway.mail CASCADE" >/dev/null
  local start end
  start=$(date +%s.%N)
  psql -d postgres -c "SELECT count(mail_gateway.send_mail('\"Sales\" <sales@$domain>', ARRAY['customer' || i || '@customer.example'],
        'Order ' || i, body_text => repeat('A line of the order confirmation. ', 60)))
        FROM generate_series(1, $MAILS) AS i" >/dev/null
  local deadline=$(( $(date +%s) + 600 ))
  while [ "$(psql -d postgres -tAc "SELECT count(*) FROM mail_gateway.mail WHERE state <> 'sent'")" != "0" ]; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "not all mail was sent:" >&2
      psql -d postgres -c "SELECT state, failure_reason, count(*) FROM mail_gateway.mail GROUP BY 1, 2" >&2
      exit 1
    fi
    sleep 0.05
  done
  end=$(date +%s.%N)
  local rate
  rate=$(printf '%.0f' "$(echo "$MAILS / ($end - $start)" | bc -l)")
  printf '%-34s %8d mails/s   (%d mails in %.2f s, %d senders)\n' "$label" \
    "$rate" "$MAILS" "$(echo "$end - $start" | bc -l)" "$SENDERS"
  row "queue → SMTP (smtp-sink), $label, $SENDERS senders" "$rate mails/s" "$target"
}

echo
echo "== Queue → SMTP (smtp-sink), one mail per recipient, ~2 KB each"
run_queue "no DKIM" mycompany.com "≥ 3,000"
psql -d postgres -c "SELECT mail_gateway.create_dkim_key('signed.example', 'mail', 'rsa')" >/dev/null
run_queue "DKIM RSA-2048" signed.example
psql -d postgres -c "SELECT mail_gateway.create_dkim_key('ed.example', 'mail', 'ed25519')" >/dev/null
run_queue "DKIM Ed25519" ed.example

start=$(date +%s.%N)
/usr/sbin/smtp-source -s "$SENDERS" -m "$MAILS" -l 2048 -f sales@mycompany.com -t customer@customer.example 127.0.0.1:"$SINKPORT"
end=$(date +%s.%N)
rate=$(printf '%.0f' "$(echo "$MAILS / ($end - $start)" | bc -l)")
printf '%-34s %8d mails/s   (%d mails in %.2f s, %d sessions)\n' "smtp-source (Postfix), same sink" \
  "$rate" "$MAILS" "$(echo "$end - $start" | bc -l)" "$SENDERS"
row "Postfix smtp-source to the same sink, $SENDERS sessions (reference)" "$rate mails/s"

echo
LATENCY_MAILS=${LATENCY_MAILS:-200}
echo "== Commit-to-delivery latency on an idle queue ($LATENCY_MAILS single mails, 20–100 ms apart)"
# From just before COMMIT (clock_timestamp() in the transaction that queues the mail) to the
# worker's record of the 250 answer (sent_at, the start of the recording transaction, which
# begins after the SMTP exchange): wake-up on commit, claim, build, SMTP, record.
psql -d postgres <<'SQL' >/dev/null
TRUNCATE mail_gateway.mail CASCADE;
CREATE TABLE bench_latency (mail_id bigint PRIMARY KEY, committed_at timestamptz NOT NULL);
SQL
for i in $(seq 1 "$LATENCY_MAILS"); do
  id=$(psql -d postgres -tA <<SQL
BEGIN;
INSERT INTO bench_latency
SELECT id, clock_timestamp()
  FROM mail_gateway.send_mail('"Sales" <sales@mycompany.com>', ARRAY['customer$i@customer.example'],
                              'Order $i', body_text => 'Thank you for your order.') AS id
RETURNING mail_id;
COMMIT;
SQL
  )
  id=${id%%$'\n'*}
  for _ in $(seq 1 500); do
    [ "$(psql -d postgres -tAc "SELECT state FROM mail_gateway.mail WHERE id = $id")" = sent ] && break
    sleep 0.01
  done
  sleep "0.0$(( RANDOM % 8 + 2 ))"
done
read -r p50 p99 sent < <(psql -d postgres -tA -F ' ' -c "
  SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
         round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1), count(*)
    FROM (SELECT extract(epoch FROM m.sent_at - l.committed_at) * 1000 AS ms
            FROM bench_latency l JOIN mail_gateway.mail m ON m.id = l.mail_id
           WHERE m.state = 'sent') t")
[ "$sent" = "$LATENCY_MAILS" ] || { echo "only $sent of $LATENCY_MAILS latency mails were sent" >&2; exit 1; }
printf '%-34s p50 %s ms, p99 %s ms (%d mails)\n' "commit → delivered" "$p50" "$p99" "$sent"
row "commit-to-delivery latency, idle queue (p50 / p99)" "$p50 ms / $p99 ms"

echo
echo "== send_mail() in a transaction vs a plain INSERT of the same row (pgbench, 1 client, 10 s each)"
# In a database the workers do not serve, so that only the API's own cost is measured; the
# delivery work it causes is what the throughput figures above measure.
psql -d postgres -c "CREATE DATABASE bench" >/dev/null
psql -d bench <<'SQL' >/dev/null
CREATE EXTENSION mail_gateway;
-- The same table, with the same indexes and defaults, that nothing reads.
CREATE TABLE plain_mail (LIKE mail_gateway.mail INCLUDING ALL);
SQL
cat > "$DIR/send_mail.sql" <<'SQL'
SELECT mail_gateway.send_mail('"Sales" <sales@mycompany.com>', ARRAY['customer@customer.example'], 'Order', body_text => 'Thank you for your order.');
SQL
cat > "$DIR/insert.sql" <<'SQL'
INSERT INTO plain_mail (message_id, email_from, email_to, subject, body_text, next_attempt_at, kind)
VALUES ('<' || md5(random()::text) || '@mycompany.com>', '"Sales" <sales@mycompany.com>', ARRAY['customer@customer.example'], 'Order', 'Thank you for your order.', now(), 'transactional');
SQL
chmod a+r "$DIR"/*.sql
tps() { "$B/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -n -c 1 -T 10 -M prepared -f "$1" bench 2>/dev/null | awk '/^tps/ {print $3}'; }
t_send=$(tps "$DIR/send_mail.sql")
t_insert=$(tps "$DIR/insert.sql")
printf '%-34s %8.0f tx/s   %.3f ms each\n' "send_mail()" "$t_send" "$(echo "1000 / $t_send" | bc -l)"
printf '%-34s %8.0f tx/s   %.3f ms each\n' "plain INSERT" "$t_insert" "$(echo "1000 / $t_insert" | bc -l)"
ratio=$(printf '%.2f' "$(echo "$t_insert / $t_send" | bc -l)")
printf '%-34s %8s×\n' "send_mail / INSERT cost" "$ratio"
row "\`send_mail()\` vs a plain INSERT of the same row" \
  "$(printf '%.3f ms vs %.3f ms = %s×' "$(echo "1000 / $t_send" | bc -l)" "$(echo "1000 / $t_insert" | bc -l)" "$ratio")" "≤ 2×"

echo
echo "== Inbound: process_message(), IMAP fetch from Dovecot, fetcher memory (own cluster)"
cargo build --release -q -p mail_gateway_tests --bin bench_inbound
./target/release/bench_inbound "${FETCH:-5000}"

echo
echo "== Bounce analysis on the corpus (tests/corpora) (real bounces from many MTAs; no timing)"
cargo build --release -q -p mail_gateway_tests --bin bounce_corpus
./target/release/bounce_corpus

# The table.
{
  echo
  echo "| what | figure | target |"
  echo "|---|---|---|"
  while IFS=$'\t' read -r what figure target; do
    echo "| $what | $figure | $target |"
  done <"$BENCH_ROWS"
  echo
  echo "$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(. /etc/os-release && echo "$PRETTY_NAME"), $("$B/postgres" --version), $(date -u +%F)"
} >&3
