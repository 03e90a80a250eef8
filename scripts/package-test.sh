#!/usr/bin/env bash
# The PostgreSQL 15 package, installed as a user would: `dpkg -i` of the .deb alone, then a
# cluster with mail_gateway preloaded, CREATE EXTENSION, the worker started, `dpkg -r`.
#
# It runs in a private mount namespace so that it neither needs a second machine nor disturbs
# this one: Debian's PostgreSQL directories and dpkg's database are overlays whose writes
# vanish with the namespace (the suite's own `cargo pgrx install` there is untouched, and
# removed from view first so that only the package can provide the extension), and the build
# tree is hidden: the checkout (target/ included) and the cargo, rustup and pgrx homes are
# empty. What this proves: the package alone, on this Debian 12 with Debian's postgresql-15,
# installs, is found by PostgreSQL, creates the extension and starts the worker. Runs as root
# or as a sudoer.
#   bash scripts/package-test.sh           the release package
#   bash scripts/package-test.sh --debug   the same package unoptimised (scripts/test.sh: it
#                                          reuses the suite's build instead of a 10-minute one)
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ "${1:-}" != --inside ]; then
  bash scripts/package.sh "$@" 15
  dir=target/debian
  [ "${1:-}" != --debug ] || dir=target/debian-debug
  version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
  work=$(mktemp -d /tmp/mg-package.XXXXXX)
  trap 'as_root rm -rf "$work"' EXIT
  cp "$dir/postgresql-15-mail-gateway_${version}_$(dpkg --print-architecture).deb" "$work/"
  cp scripts/package-test.sh "$work/"
  chmod 755 "$work"
  before=$(sha256sum /usr/lib/postgresql/15/lib/mail_gateway.so 2>/dev/null || true)
  as_root unshare --mount --propagation private \
    env MG_HIDE="$PWD ${CARGO_HOME:-$HOME/.cargo} ${RUSTUP_HOME:-$HOME/.rustup} ${PGRX_HOME:-$HOME/.pgrx}" \
    MG_VERSION="$version" bash "$work/package-test.sh" --inside "$work"
  # Nothing of it is left outside the namespace.
  [ "$(sha256sum /usr/lib/postgresql/15/lib/mail_gateway.so 2>/dev/null || true)" = "$before" ]
  if dpkg -s postgresql-15-mail-gateway >/dev/null 2>&1; then echo "the package leaked out"; exit 1; fi
  echo "package test: passed (the system's PostgreSQL 15 and dpkg database are as they were)"
  exit 0
fi

# Inside the namespace, from a copy of this script in a directory of its own.
work=$2
cd "$work"
# What dpkg -i and -r write: the package's directories, dpkg's database, and what
# postgresql-common's trigger (pg_updatedicts) rewrites.
for dir in /usr/lib/postgresql/15/lib /usr/lib/postgresql/15/bin /usr/share/postgresql /var/lib/dpkg /var/cache/postgresql; do
  [ -d "$dir" ] || continue
  layer=$(mktemp -d -p "$work")
  mount -t tmpfs layer "$layer" && mkdir "$layer/upper" "$layer/work"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
for dir in $MG_HIDE; do
  [ -d "$dir" ] || continue
  mount -t tmpfs -o ro,size=4k hidden "$dir"
  [ -z "$(ls -A "$dir")" ]
done
rm -f /usr/lib/postgresql/15/lib/mail_gateway.so /usr/share/postgresql/15/extension/mail_gateway*

dpkg --log=/dev/null -i ./*.deb
owned=$(dpkg -L postgresql-15-mail-gateway | grep -c mail_gateway)
echo "dpkg: postgresql-15-mail-gateway $(dpkg-query -W -f='${Version}' postgresql-15-mail-gateway), $owned files"

chown postgres: "$work"
runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$work/data" -U postgres -A trust \
  --no-locale -E UTF8 --no-sync >/dev/null
cat >>"$work/data/postgresql.auto.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'mail_gateway'
mail_gateway.database = 'postgres'
mail_gateway.poll_interval = '200ms'
EOF
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$work/data" -l "$work/server.log" -w start >/dev/null
stop() { runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$work/data" -m fast -w stop >/dev/null; }
trap 'stop; cat "$work/server.log"' ERR
sql() { runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h "$work" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 -c "$1"; }

sql "CREATE EXTENSION mail_gateway"
[ "$(sql "SELECT extversion FROM pg_extension WHERE extname = 'mail_gateway'")" = "$MG_VERSION" ]
for _ in $(seq 300); do
  workers=$(sql "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'mail_gateway worker'")
  [ "$workers" -gt 0 ] && break
  sleep 0.1
done
[ "$workers" -gt 0 ] || { echo "no mail_gateway worker"; false; }
echo "cluster: CREATE EXTENSION mail_gateway $MG_VERSION, $workers worker(s) running"
# The MTA's pipe from the package, as Postfix would run it (as a user that is not root).
printf 'From: a@customer.example\r\nMessage-ID: <piped@customer.example>\r\n\r\nhi\r\n' |
  runuser -u postgres -- /usr/lib/postgresql/15/bin/mail-gateway-deliver "host=$work dbname=postgres user=postgres"
[ "$(sql "SELECT count(*) FROM mail_gateway.inbound WHERE message_id = '<piped@customer.example>'")" = 1 ]
echo "mail-gateway-deliver: a piped message stored"
stop
trap - ERR

dpkg --log=/dev/null -r postgresql-15-mail-gateway >/dev/null
[ ! -e /usr/lib/postgresql/15/lib/mail_gateway.so ] && [ ! -e /usr/lib/postgresql/15/bin/mail-gateway-deliver ]
[ -z "$(ls /usr/share/postgresql/15/extension/mail_gateway* 2>/dev/null)" ]
echo "dpkg -r: every file of the package removed"
