#!/usr/bin/env bash
# Every benchmark, as one table (never timed tests). Builds a release, starts its own cluster,
# Postfix's smtp-sink on 127.0.0.1 and a proxy that puts the sink 50 ms of round trip away,
# and measures, the default configuration first:
#   1. mails/s from the queue into smtp-sink with the settings a user gets (one sender):
#      5 KB text over the loopback, next to smtp-source over one kept connection; 2 KB at
#      RTT 50 ms, next to smtp-source with 20 kept connections through the same proxy; both
#      next to django-post-office 3.12 in its default configuration (1 process, 5 threads) to
#      the same sink and proxy (scripts/bench-django-post-office.sh, a venv from PyPI), with the
#      ratio (target ≥ 4×); fewer mails for it (DJANGO_MAILS=5000, DJANGO_RTT_MAILS=1000);
#   2. commit-to-250 latency (p50, p99) of single mails on an idle queue, at RTT 50 ms and on
#      the loopback;
#   3. tuned rows, labelled: 2 senders, batches of 500 (no DKIM, RSA and Ed25519 DKIM), and
#      20 connections at RTT 50 ms;
#   4. the cost of send_mail() in a transaction next to a plain INSERT of the same row, and
#      10,000 mails queued in one statement through the outbox view next to send_mail() per row;
#   5. inbound: process_message() msgs/s (5 KB, 1 MB), routed replies and alias creations,
#      IMAP fetch msgs/s from Dovecot, the fetcher's peak memory for a 50 MB message
#      (tests/src/bin/bench_inbound.rs), and the bounce corpus score (bounce_corpus);
#   6. push delivery (tests/src/bin/bench_lmtp.rs): msgs/s stored through the LMTP listener from
#      `smtp-source -L` (1 and 4 sessions) next to process_message() of the same 5 KB message
#      from 1 client, and through a private Postfix (SMTP in, its queue, LMTP out).
# Progress and details go to stderr; the table (Markdown, as in docs/BENCHMARKS.md) to stdout.
# Usage: scripts/bench.sh [MAILS]   (default 20000 on the loopback; RTT_MAILS=4000,
# LATENCY_MAILS=200, FETCH=5000). MG_PG_BIN names the PostgreSQL to use (default Debian's 15);
# MG_SKIP_SETUP=1 skips scripts/setup.sh; BENCH_PARTS=outbound stops after the sending rows,
# BENCH_PARTS=lmtp runs only part 6 (LMTP_MAILS=5000 messages a row), BENCH_PARTS=routing only
# the routing rows of part 5;
# MG_BENCH_NO_DJANGO=1 leaves django-post-office out (so does a failed pip install);
# MG_BENCH_VENV names its venv (default /tmp/mg-bench-venv, reused).
set -euo pipefail
cd "$(dirname "$0")/.."
exec 3>&1 1>&2

MAILS=${1:-20000}
RTT_MAILS=${RTT_MAILS:-4000}
B=${MG_PG_BIN:-/usr/lib/postgresql/15/bin}

[ -n "${MG_SKIP_SETUP:-}" ] || bash scripts/setup.sh >/dev/null
echo "building the release build …"
cargo pgrx install --release --pg-config "$B/pg_config" >/dev/null 2>&1
cargo build --release -q -p mail_gateway_tests --bin delay_proxy --bin bench_inbound --bin bounce_corpus --bin bench_lmtp

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
PROXYPORT=$(free_port)
cleanup() {
  as_postgres "$B/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${SINK:-}" ] && kill "$SINK" 2>/dev/null || true
  [ -n "${PROXY:-}" ] && kill "$PROXY" 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# The table, to the original stdout.
table() {
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
}

# Push delivery over LMTP: its own cluster and Postfix (needs root for Postfix).
run_lmtp() {
  echo
  echo "== Push delivery over LMTP (own cluster, own Postfix)"
  ./target/release/bench_lmtp "${LMTP_MAILS:-5000}"
}
if [ "${BENCH_PARTS:-all}" = routing ]; then
  ./target/release/bench_inbound
  table
  exit 0
fi
if [ "${BENCH_PARTS:-all}" = lmtp ]; then
  run_lmtp
  table
  exit 0
fi

as_postgres "$B/initdb" -D "$DIR/data" -U postgres -A trust --no-locale -E UTF8 >/dev/null
cat >> "$DIR/data/postgresql.auto.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
shared_preload_libraries = 'mail_gateway'
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
# The same sink 25 ms away each way.
./target/release/delay_proxy "$PROXYPORT" "$SINKPORT" 25 >/dev/null &
PROXY=$!
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/"$PROXYPORT") 2>/dev/null && break; sleep 0.1; done

psql -d postgres <<SQL >/dev/null
CREATE EXTENSION mail_gateway;
SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
SELECT mail_gateway.set_parameter('mail.send.daily_limit', '0');
INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption) VALUES ('sink', '127.0.0.1', $SINKPORT, 'none');
INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, active) VALUES ('far', '127.0.0.1', $PROXYPORT, 'none', false);
SQL
use_server() { psql -d postgres -c "UPDATE mail_gateway.outgoing_server SET active = (name = '$1')" >/dev/null; }

# Changes server settings (postmaster-level ones need the restart) and waits for the workers.
configure() {
  psql -d postgres -c "ALTER SYSTEM SET mail_gateway.senders = $1" -c "ALTER SYSTEM SET mail_gateway.send_batch_size = $2" >/dev/null
  as_postgres "$B/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -m fast -w restart >/dev/null
  for _ in $(seq 1 100); do
    [ "$(psql -d postgres -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('mail_gateway worker', 'mail_gateway sender')")" = "$1" ] && break
    sleep 0.1
  done
}

# Queues $2 mails of about $3 bytes in one transaction, then times until the last is sent.
run_queue() {
  local label=$1 n=$2 size=$3 domain=$4 target=${5:-}
  psql -d postgres -c "TRUNCATE mail_gateway.mail CASCADE" >/dev/null
  # Lines of 64 characters: 5 KB is 80 lines of text.
  local lines=$(( size / 64 ))
  local start end
  start=$(date +%s.%N)
  psql -d postgres -c "SELECT count(mail_gateway.send_mail('\"Sales\" <sales@$domain>', ARRAY['customer' || i || '@customer.example'],
        'Order ' || i, body_text => repeat('A line of the order confirmation, sixty-three characters long.' || chr(10), $lines)))
        FROM generate_series(1, $n) AS i" >/dev/null
  local deadline=$(( $(date +%s) + 900 ))
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
  rate=$(printf '%.0f' "$(echo "$n / ($end - $start)" | bc -l)")
  printf '%-52s %8d mails/s   (%d mails in %.2f s)\n' "$label" "$rate" "$n" "$(echo "$end - $start" | bc -l)"
  row "$label" "$rate mails/s" "$target"
  LAST_RATE=$rate
}

# Postfix's own client to the same sink (or the proxy): $1 sessions kept open, $2 mails of $3 bytes.
run_source() {
  local label=$1 sessions=$2 n=$3 size=$4 port=$5 start end rate
  start=$(date +%s.%N)
  /usr/sbin/smtp-source -d -s "$sessions" -m "$n" -l "$size" -f sales@mycompany.com -t customer@customer.example 127.0.0.1:"$port"
  end=$(date +%s.%N)
  rate=$(printf '%.0f' "$(echo "$n / ($end - $start)" | bc -l)")
  printf '%-52s %8d mails/s   (%d mails in %.2f s)\n' "$label" "$rate" "$n" "$(echo "$end - $start" | bc -l)"
  row "$label (reference)" "$rate mails/s"
}

# django-post-office 3.12 in its default configuration to the same sink (or the proxy): $2 mails
# of $3 bytes to port $4, one process (scripts/bench-django-post-office.sh: its queuing is not
# timed, run_queue's is). Sets DJANGO_RATE, empty when left out: MG_BENCH_NO_DJANGO=1, a failed
# install (exit 3: no network to PyPI; then for every later row too) or a failed run.
DJANGO=run
[ -z "${MG_BENCH_NO_DJANGO:-}" ] || DJANGO="left out (MG_BENCH_NO_DJANGO)"
run_django() {
  local label=$1 n=$2 size=$3 port=$4 rc=0
  DJANGO_RATE=
  if [ "$DJANGO" != run ]; then
    echo "django-post-office $DJANGO: no row \"$label\""
    return 0
  fi
  DJANGO_RATE=$(bash scripts/bench-django-post-office.sh "$port" "$n" "$size" 1) || rc=$?
  if [ "$rc" -ne 0 ]; then
    DJANGO_RATE=
    if [ "$rc" -eq 3 ]; then
      DJANGO="left out (pip could not install it)"
      echo "django-post-office could not be installed (see above): its rows are left out"
    else
      echo "django-post-office failed (exit $rc): no row \"$label\""
    fi
    return 0
  fi
  printf '%-52s %8s mails/s   (%d mails)\n' "$label" "$DJANGO_RATE" "$n"
  row "$label (reference)" "$DJANGO_RATE mails/s"
}
# A derived row: $1, our rate $2 over the reference's $3 (nothing if the reference is missing).
ratio_row() {
  local label=$1 ours=$2 theirs=$3 target=${4:-} ratio
  [ -n "$theirs" ] || return 0
  ratio=$(printf '%.1f' "$(echo "$ours / $theirs" | bc -l)")
  printf '%-52s %8s×\n' "$label" "$ratio"
  row "$label" "$ours vs $theirs mails/s = $ratio×" "$target"
}

# Commit → 250: from just before COMMIT (clock_timestamp() in the transaction that queues the
# mail) to the worker's record of the 250 answer (sent_at, the start of the recording
# transaction, which begins after the SMTP exchange): wake-up on commit, claim, build, SMTP,
# record. LATENCY_MAILS single mails, 20–100 ms apart, so that the queue is idle each time (and
# a kept connection warm).
LATENCY_MAILS=${LATENCY_MAILS:-200}
run_latency() {
  local label=$1 target=${2:-}
  psql -d postgres -c "TRUNCATE mail_gateway.mail CASCADE" -c "DROP TABLE IF EXISTS bench_latency" \
    -c "CREATE TABLE bench_latency (mail_id bigint PRIMARY KEY, committed_at timestamptz NOT NULL)" >/dev/null
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
  printf '%-52s p50 %s ms, p99 %s ms (%d mails)\n' "$label" "$p50" "$p99" "$sent"
  row "$label (p50 / p99)" "$p50 ms / $p99 ms" "$target"
}

echo
echo "== Default settings (1 sender, batches of 200, 20 connections per server)"
use_server sink
DJANGO_MAILS=${DJANGO_MAILS:-5000}
DJANGO_RTT_MAILS=${DJANGO_RTT_MAILS:-1000}
[ "$DJANGO_MAILS" -le "$MAILS" ] || DJANGO_MAILS=$MAILS
[ "$DJANGO_RTT_MAILS" -le "$RTT_MAILS" ] || DJANGO_RTT_MAILS=$RTT_MAILS
run_queue "queue → SMTP (smtp-sink), default settings, 5 KB, loopback" "$MAILS" 5120 mycompany.com "≥ 0.8× smtp-source, 1 connection"
ours=$LAST_RATE
run_source "Postfix smtp-source, 1 kept connection, 5 KB, loopback" 1 "$MAILS" 5120 "$SINKPORT"
run_django "django-post-office 3.12, 1 process, 5 KB, loopback, $DJANGO_MAILS mails" "$DJANGO_MAILS" 5120 "$SINKPORT"
ratio_row "default settings / django-post-office 3.12, 5 KB, loopback" "$ours" "$DJANGO_RATE" "≥ 4×"
use_server far
run_queue "queue → SMTP (smtp-sink), default settings, 2 KB, RTT 50 ms" "$RTT_MAILS" 2048 mycompany.com "≥ 200 mails/s with ≤ 20 connections"
ours=$LAST_RATE
run_source "Postfix smtp-source, 20 kept connections, 2 KB, RTT 50 ms" 20 "$RTT_MAILS" 2048 "$PROXYPORT"
run_django "django-post-office 3.12, 1 process, 2 KB, RTT 50 ms, $DJANGO_RTT_MAILS mails" "$DJANGO_RTT_MAILS" 2048 "$PROXYPORT"
ratio_row "default settings / django-post-office 3.12, 2 KB, RTT 50 ms" "$ours" "$DJANGO_RATE" "≥ 4×"
run_latency "commit → 250 latency, idle queue, RTT 50 ms" "p50 ≤ 2 RTT + 10 ms = 110 ms"
use_server sink
run_latency "commit → 250 latency, idle queue, loopback"

echo
echo "== Tuned: 2 senders, batches of 500"
configure 2 500
run_queue "tuned: queue → SMTP (smtp-sink), 2 senders, no DKIM, 2 KB, loopback" "$MAILS" 2048 mycompany.com "≥ 3,000"
psql -d postgres -c "SELECT mail_gateway.create_dkim_key('signed.example', 'mail', 'rsa')" >/dev/null
run_queue "tuned: the same, DKIM RSA-2048" "$MAILS" 2048 signed.example
psql -d postgres -c "SELECT mail_gateway.create_dkim_key('ed.example', 'mail', 'ed25519')" >/dev/null
run_queue "tuned: the same, DKIM Ed25519" "$MAILS" 2048 ed.example
run_source "Postfix smtp-source, 2 kept connections, 2 KB, loopback" 2 "$MAILS" 2048 "$SINKPORT"
use_server far
psql -d postgres -c "UPDATE mail_gateway.outgoing_server SET max_connections = 20" >/dev/null
run_queue "tuned: queue → SMTP, 2 senders × 10 connections, 2 KB, RTT 50 ms" "$RTT_MAILS" 2048 mycompany.com "≥ 200 mails/s with ≤ 20 connections"
configure 1 200
use_server sink

if [ "${BENCH_PARTS:-all}" != outbound ]; then
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
echo "== Queuing 10,000 mails in one statement: the outbox view vs send_mail() per row"
# The same database and mail as send_mail.sql; each statement its own transaction, timed around
# psql, on an emptied queue (after pgbench, which it therefore does not disturb).
OUTBOX_MAILS=10000
# Seconds that statement $1 takes to queue OUTBOX_MAILS mails.
queue_seconds() {
  local start end
  psql -d bench -c "SET client_min_messages = warning" -c "TRUNCATE mail_gateway.mail CASCADE" -c "CHECKPOINT" >/dev/null
  start=$(date +%s.%N)
  psql -d bench -c "$1" >/dev/null
  end=$(date +%s.%N)
  [ "$(psql -d bench -tAc "SELECT count(*) FROM mail_gateway.mail")" = "$OUTBOX_MAILS" ] ||
    { echo "not $OUTBOX_MAILS mails queued by: $1" >&2; exit 1; }
  echo "$end - $start" | bc -l
}
s_send=$(queue_seconds "SELECT count(mail_gateway.send_mail('\"Sales\" <sales@mycompany.com>', ARRAY['customer@customer.example'],
                               'Order', body_text => 'Thank you for your order.'))
                          FROM generate_series(1, $OUTBOX_MAILS)")
s_outbox=$(queue_seconds "INSERT INTO mail_gateway.outbox (email_from, email_to, subject, body_text)
                          SELECT '\"Sales\" <sales@mycompany.com>', ARRAY['customer@customer.example'],
                                 'Order', 'Thank you for your order.'
                            FROM generate_series(1, $OUTBOX_MAILS)")
psql -d bench -c "SET client_min_messages = warning" -c "TRUNCATE mail_gateway.mail CASCADE" >/dev/null
r_outbox=$(printf '%.0f' "$(echo "$OUTBOX_MAILS / $s_outbox" | bc -l)")
r_send=$(printf '%.0f' "$(echo "$OUTBOX_MAILS / $s_send" | bc -l)")
ms_outbox=$(printf '%.3f' "$(echo "1000 * $s_outbox / $OUTBOX_MAILS" | bc -l)")
ms_send=$(printf '%.3f' "$(echo "1000 * $s_send / $OUTBOX_MAILS" | bc -l)")
printf '%-34s %8d mails/s   %s ms each\n' "outbox INSERT ... SELECT" "$r_outbox" "$ms_outbox"
printf '%-34s %8d mails/s   %s ms each\n' "send_mail() per row" "$r_send" "$ms_send"
row "queuing 10,000 mails in one statement: \`outbox\` INSERT … SELECT vs \`send_mail()\` per row" \
  "$r_outbox mails/s vs $r_send mails/s ($ms_outbox ms vs $ms_send ms a mail)" "\`outbox\` within 2× of \`send_mail()\`"

echo
echo "== Inbound: process_message(), IMAP fetch from Dovecot, fetcher memory (own cluster)"
./target/release/bench_inbound "${FETCH:-5000}"

run_lmtp

echo
echo "== Bounce analysis on the corpus (tests/corpora) (real bounces from many MTAs; no timing)"
./target/release/bounce_corpus
fi

table
