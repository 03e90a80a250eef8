#!/usr/bin/env bash
# The SQL behaviour pinned declaratively: PostgreSQL's own pg_regress runs
# tests/pg_regress/sql/*.sql (setup first) against a fresh cluster with the installed extension
# and compares each output with tests/pg_regress/expected/*.out.
#   bash scripts/regress.sh            every test
#   bash scripts/regress.sh --update   the same, then copies the outputs over the expected files
#                                      (read the diff before committing it)
# MG_PG_BIN names the PostgreSQL (default Debian's 15); the extension must be installed in it
# (`cargo pgrx install`, as scripts/test.sh does before). Runs as root (the cluster runs as
# `postgres`) or as an ordinary user.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${MG_PG_BIN:-/usr/lib/postgresql/15/bin}
REGRESS=$("$BIN/pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress
update=${1:-}

tests=(setup)
for f in tests/pg_regress/sql/*.sql; do
  name=$(basename "$f" .sql)
  [ "$name" = setup ] || tests+=("$name")
done

dir=$(mktemp -d /tmp/mg-regress.XXXXXX)
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
cleanup() { as_owner "$BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT

as_owner "$BIN/initdb" -D "$dir/data" -U postgres -A trust --no-locale -E UTF8 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -c listen_addresses='' -k $dir" start >/dev/null

cp -r tests/pg_regress "$dir/suite"
[ "$(id -u)" -ne 0 ] || chown -R postgres: "$dir/suite"
status=0
as_owner "$REGRESS" --bindir="$BIN" --host="$dir" --port="$port" --user=postgres \
  --dbname=mail_gateway_regress --inputdir="$dir/suite" --outputdir="$dir/out" \
  "${tests[@]}" || status=$?
if [ "$update" = --update ]; then
  cp "$dir"/out/results/*.out tests/pg_regress/expected/
  echo "expected outputs updated from this run: review them with git diff"
  exit 0
fi
if [ "$status" -ne 0 ]; then
  cat "$dir/out/regression.diffs" >&2 || true
fi
exit "$status"
