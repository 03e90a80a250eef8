#!/usr/bin/env bash
# This build next to release 0.1.0, side by side in one run: the targets "within 10 % of before"
# (issues 12 and 16) compare figures taken minutes apart on the same machine, never figures from
# another day (the same VM has measured the same build 2–3× apart on different days).
#
# Builds 0.1.0 (commit $MG_BASELINE_REV) into a private copy of Debian's PostgreSQL 15 under
# $MG_BASELINE_DIR (default /tmp/mg-baseline, kept for the next run), installs this checkout's
# release build into the system's PostgreSQL 15 as scripts/bench.sh does, then alternates the
# two builds, $ROUNDS rounds (default 2), on the same workloads:
#   - sending: $MAILS mails (default 20,000) of ~2 KB queued with send_mail() in one statement
#     into Postfix's smtp-sink, timed until the last is sent; default settings (1 sender,
#     batches of 200) and tuned (2 senders, batches of 500);
#   - receiving: tests/src/bin/bench_inbound.rs's routing rows (BENCH_PARTS=routing), whose SQL
#     0.1.0 understands too.
# Prints each figure and, per row, the means and their ratio. Runs as root or as a sudoer.
set -euo pipefail
cd "$(dirname "$0")/.."

REV=${MG_BASELINE_REV:-30fc096}
BASE=${MG_BASELINE_DIR:-/tmp/mg-baseline}
ROUNDS=${ROUNDS:-2}
MAILS=${MAILS:-20000}
B=/usr/lib/postgresql/15/bin
OLD_B=$BASE/pg/usr/lib/postgresql/15/bin
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

[ -n "${MG_SKIP_SETUP:-}" ] || bash scripts/setup.sh >/dev/null
mkdir -p "$BASE"
if [ ! -x "$OLD_B/pg_config" ]; then
  echo "a private PostgreSQL 15 for 0.1.0 in $BASE/pg …"
  rm -rf "$BASE/debs" && mkdir -p "$BASE/debs"
  (cd "$BASE/debs" && apt-get download postgresql-15 postgresql-client-15 postgresql-server-dev-15 >/dev/null 2>&1)
  for deb in "$BASE"/debs/*.deb; do dpkg-deb -x "$deb" "$BASE/pg"; done
fi
if [ ! -f "$BASE/pg/usr/lib/postgresql/15/lib/mail_gateway.so" ]; then
  echo "building 0.1.0 ($REV) …"
  rm -rf "$BASE/src" && mkdir -p "$BASE/src" "$BASE/pgrx"
  git archive "$REV" | tar -x -C "$BASE/src"
  (cd "$BASE/src" &&
    PGRX_HOME=$BASE/pgrx cargo pgrx init --pg15 "$OLD_B/pg_config" >/dev/null &&
    PGRX_HOME=$BASE/pgrx CARGO_TARGET_DIR=$BASE/target CARGO_INCREMENTAL=0 \
      cargo pgrx install --release --pg-config "$OLD_B/pg_config" >/dev/null 2>&1)
fi
echo "building this checkout's release build …"
CARGO_INCREMENTAL=0 cargo pgrx install --release --pg-config "$B/pg_config" >/dev/null 2>&1
cargo build --release -q -p mail_gateway_tests --bin bench_inbound

RESULTS=$(mktemp /tmp/mg-baseline-results.XXXXXX)
trap 'rm -f "$RESULTS"' EXIT
# One figure: build, row, value.
result() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

# Sending with build $1 (its PostgreSQL bin directory $2), $3 senders, batches of $4.
sending() {
  local build=$1 bin=$2 senders=$3 batch=$4 dir port sink start end rate
  dir=$(mktemp -d /tmp/mg-baseline-send.XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  port=$(free_port)
  sink=$(free_port)
  as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-locale -E UTF8 >/dev/null
  cat >>"$dir/data/postgresql.auto.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'mail_gateway'
mail_gateway.senders = $senders
mail_gateway.send_batch_size = $batch
shared_buffers = '512MB'
synchronous_commit = on
CONF
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
  local sink_user=()
  [ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)
  /usr/sbin/smtp-sink "${sink_user[@]}" 127.0.0.1:"$sink" 1000 &
  local sink_pid=$!
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/"$sink") 2>/dev/null && break; sleep 0.1; done
  local q=("$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 -d postgres)
  "${q[@]}" >/dev/null <<SQL
CREATE EXTENSION mail_gateway;
SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
SELECT mail_gateway.set_parameter('mail.send.daily_limit', '0');
INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption) VALUES ('sink', '127.0.0.1', $sink, 'none');
SQL
  sleep 2
  start=$(date +%s.%N)
  "${q[@]}" -c "SELECT count(mail_gateway.send_mail('\"Sales\" <sales@mycompany.com>', ARRAY['customer' || i || '@customer.example'],
        'Order ' || i, body_text => repeat('A line of the order confirmation. ', 60)))
        FROM generate_series(1, $MAILS) AS i" >/dev/null
  local deadline=$(($(date +%s) + 600))
  while [ "$("${q[@]}" -tAc "SELECT count(*) FROM mail_gateway.mail WHERE state <> 'sent'")" != "0" ]; do
    [ "$(date +%s)" -le "$deadline" ] || { echo "$build: not all mail was sent" >&2; exit 1; }
    sleep 0.05
  done
  end=$(date +%s.%N)
  as_postgres "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  kill "$sink_pid" 2>/dev/null || true
  rm -rf "$dir"
  rate=$(printf '%.0f' "$(echo "$MAILS / ($end - $start)" | bc -l)")
  local row="queue → smtp-sink, $senders sender(s), batches of $batch, 2 KB, mails/s"
  printf '%-8s %-60s %8s\n' "$build" "$row" "$rate"
  result "$build" "$row" "$rate"
}

# The routing rows of bench_inbound with build $1 (its PostgreSQL bin directory $2).
routing() {
  local build=$1 bin=$2 line row rate
  while IFS= read -r line; do
    case "$line" in
      "routed replies"* | "alias creations"*)
        row=$(echo "$line" | sed -E 's/ +[0-9]+ msgs\/s.*//')", $(echo "$line" | grep -oE '[0-9]+ client\(s\)'), msgs/s"
        rate=$(echo "$line" | grep -oE '[0-9]+ msgs/s' | grep -oE '[0-9]+')
        printf '%-8s %-60s %8s\n' "$build" "$row" "$rate"
        result "$build" "$row" "$rate"
        ;;
    esac
  done < <(MG_PG_BIN=$bin BENCH_PARTS=routing BENCH_ROWS=/dev/null ./target/release/bench_inbound 2>&1)
}

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round"
  for build in 0.1.0 this; do
    bin=$B
    [ "$build" = 0.1.0 ] && bin=$OLD_B
    sending "$build" "$bin" 1 200
    sending "$build" "$bin" 2 500
    routing "$build" "$bin"
  done
done

echo
echo "| row | 0.1.0 | this build | ratio |"
echo "|---|---|---|---|"
awk -F'\t' '
  { sum[$1 FS $2] += $3; n[$1 FS $2]++; if (!($2 in seen)) { seen[$2] = 1; order[++rows] = $2 } }
  END {
    for (i = 1; i <= rows; i++) {
      r = order[i]; old = sum["0.1.0" FS r] / n["0.1.0" FS r]; new = sum["this" FS r] / n["this" FS r]
      printf "| %s | %.0f | %.0f | %.2f× |\n", r, old, new, new / old
    }
  }' "$RESULTS"
echo
echo "$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $("$B/postgres" --version), $(date -u +%F), $ROUNDS rounds of $MAILS mails, 0.1.0 = $REV, this = $(git rev-parse --short HEAD)"
