#!/usr/bin/env bash
# The extension on the PostgreSQL versions besides 15 (which gets the whole suite in
# scripts/test.sh). For each: its SQL tests (`cargo pgrx test pgNN`), then the extension built
# and installed into that PostgreSQL and a real round trip through it: the worker starting,
# mail sent to an SMTP server, mail fetched over IMAP and routed, pg_dump.
#   bash scripts/matrix.sh            16, 17 and 18
#   bash scripts/matrix.sh 17         one version
# Runs as root (the clusters run as `postgres`) or as a sudoer.
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(16 17 18)

# The integration tests run on every version: together they cross each layer that meets
# PostgreSQL (background workers and latches, SPI, commit hooks, catalogs, pg_dump).
END_TO_END=(
  the_launcher_waits_for_the_extension_and_starts_the_workers_at_once
  committed_mail_arrives_at_once_and_rolled_back_mail_never
  imap_messages_arrive_byte_for_byte_and_are_flagged_seen_after_commit
  a_reply_goes_round_the_whole_gateway
  pg_dump_keeps_the_configuration
)

step() { printf '\n==> %s\n' "$*"; }

bash scripts/pg-versions.sh

pgdata_parent=$(mktemp -d /tmp/mg-matrix.XXXXXX)
trap 'rm -rf "$pgdata_parent"' EXIT
[ "$(id -u)" -ne 0 ] || chown postgres: "$pgdata_parent"
timings=()
for major in "${versions[@]}"; do
  bin=$(bash scripts/pg-versions.sh bin "$major")
  started=$SECONDS

  step "PostgreSQL $major: unit and SQL tests (cargo pgrx test pg$major)"
  # PostgreSQL refuses root: the test cluster runs as `postgres`, in a fresh data directory.
  if [ "$(id -u)" -eq 0 ]; then
    cargo pgrx test "pg$major" --runas postgres --pgdata "$pgdata_parent/data$major"
  else
    cargo pgrx test "pg$major"
  fi

  step "PostgreSQL $major: install into $bin/.. and run ${#END_TO_END[@]} integration tests"
  # With the features `cargo pgrx test` just built with, the install reuses that build instead
  # of compiling the crate again (the `tests` schema it adds is never used by these tests).
  if [ "$(id -u)" -eq 0 ]; then
    cargo pgrx install --features pg_test --pg-config "$bin/pg_config"
  else
    cargo pgrx install --sudo --features pg_test --pg-config "$bin/pg_config"
  fi
  log=$pgdata_parent/e2e$major.log
  MG_PG_BIN=$bin cargo test -p mail_gateway_tests --test worker --test outbound --test fetch \
    --test extension -- --exact "${END_TO_END[@]}" 2>&1 | tee "$log"
  # Each name must have run and passed once: a renamed test fails here instead of vanishing.
  passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | paste -sd+ | bc)
  if [ "$passed" != "${#END_TO_END[@]}" ]; then
    echo "PostgreSQL $major: $passed of ${#END_TO_END[@]} integration tests ran and passed" >&2
    exit 1
  fi
  timings+=("PostgreSQL $major ($("$bin/pg_config" --version)): passed in $((SECONDS - started)) s")
done

step "matrix"
printf '%s\n' "${timings[@]}"
