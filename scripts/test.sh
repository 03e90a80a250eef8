#!/usr/bin/env bash
# Every test: formatting, clippy (warnings are errors), the pure crate's unit tests, a short
# run of each fuzz target, SQL tests inside PostgreSQL (`cargo pgrx test`), then the
# integration harness against real clusters with the worker, the pg_regress suite of SQL
# errors (scripts/regress.sh); then the same extension on
# PostgreSQL 16, 17 and 18 (scripts/matrix.sh).
# Installs what it needs first (scripts/setup.sh). Runs as root or as a sudoer.
set -euo pipefail
cd "$(dirname "$0")/.."

# MG_PG_BIN: another PostgreSQL installation to build and test against (default Debian's 15).
PG_CONFIG=${MG_PG_BIN:-/usr/lib/postgresql/15/bin}/pg_config
step() { printf '\n==> %s\n' "$*"; }

# A plain clone is all a user has: every test reads only the repository. As root, the suite
# runs in a mount namespace where every sibling of the checkout (../shared, say) is an empty
# read-only directory, so a test that reaches outside the repository fails here as it would in
# a user's clone. Kept visible: the toolchain's and pgrx's homes when they live beside it.
if [ -z "${MG_ISOLATED:-}" ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
  bash scripts/hide-siblings.sh --check
  exec env MG_ISOLATED=1 unshare --mount --propagation private \
    bash -c 'bash scripts/hide-siblings.sh && exec bash scripts/test.sh "$@"' test.sh "$@"
fi
[ -n "${MG_ISOLATED:-}" ] || echo "(not root: the checkout's siblings stay visible to the tests)"

# One build per configuration: incremental caches would only fill the disk (gigabytes over
# the four PostgreSQL versions). Said at the start and at a failure: what the disk had left.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
disk() { df -h --output=avail,target . | tail -1 | awk '{print "[disk] " $1 " free on " $2}'; }
disk
trap 'status=$?; [ $status -eq 0 ] || disk; exit $status' EXIT

step "setup"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check
(cd fuzz && cargo fmt --check)

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --features mail_gateway/pg_test -- -D warnings

step "unit tests of the pure crate (cargo test -p mail_gateway_core)"
cargo test -p mail_gateway_core

step "fuzz targets, a short reproducible run each (scripts/fuzz.sh; longer runs: docs/BENCHMARKS.md)"
FUZZ_RUNS=30000 bash scripts/fuzz.sh

step "unit and SQL tests (cargo pgrx test)"
# PostgreSQL refuses root: the test cluster runs as `postgres`, in a fresh data directory.
pgdata_parent=$(mktemp -d /tmp/mg-pgrx.XXXXXX)
trap 'status=$?; rm -rf "$pgdata_parent"; [ $status -eq 0 ] || disk; exit $status' EXIT
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$pgdata_parent"
  cargo pgrx test pg15 --runas postgres --pgdata "$pgdata_parent/data"
else
  cargo pgrx test pg15
fi

step "integration tests (real clusters, extension preloaded)"
if [ "$(id -u)" -eq 0 ]; then
  cargo pgrx install --pg-config "$PG_CONFIG"
else
  cargo pgrx install --sudo --pg-config "$PG_CONFIG"
fi
# The MTA's pipe program, which tests/tests/deliver.rs runs as an MTA would.
cargo build -p mail_gateway_deliver
cargo test -p mail_gateway_tests -- --test-threads=2

step "SQL errors pinned with pg_regress (scripts/regress.sh: SQLSTATE, message and hint of each)"
bash scripts/regress.sh

step "the PostgreSQL 15 Debian package, installed with dpkg -i (scripts/package-test.sh)"
bash scripts/package-test.sh --debug

step "PostgreSQL 16, 17 and 18: SQL tests and an end-to-end subset on each (scripts/matrix.sh)"
bash scripts/matrix.sh
disk
