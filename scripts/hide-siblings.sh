#!/usr/bin/env bash
# Hides every sibling of the checkout behind an empty read-only tmpfs (or /dev/null for a file),
# inside the caller's own mount namespace (scripts/test.sh runs it under `unshare --mount`).
# Left visible: the checkout, and whatever holds HOME, the cargo/rustup/pgrx homes, TMPDIR, the
# PostgreSQL builds of scripts/pg-versions.sh or the PostgreSQL named by MG_PG_BIN.
# --check only prints what would be hidden.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
parent=$(dirname "$repo")
if [ "$parent" = / ]; then
  echo "[isolate] the checkout is at the root of the file system: nothing beside it to hide"
  exit 0
fi
keep=("$repo" "$HOME" "${CARGO_HOME:-$HOME/.cargo}" "${RUSTUP_HOME:-$HOME/.rustup}"
      "${PGRX_HOME:-$HOME/.pgrx}" "${MG_PG_ROOT:-/opt/mail_gateway}" "${TMPDIR:-/tmp}")
if [ -n "${MG_PG_BIN:-}" ]; then keep+=("$MG_PG_BIN"); fi
hidden=()
shopt -s dotglob nullglob
for sibling in "$parent"/*; do
  skip=
  for k in "${keep[@]}"; do
    case "$k/" in "$sibling"/*) skip=1 ;; esac
  done
  [ -n "$skip" ] && continue
  hidden+=("$(basename "$sibling")")
  [ "${1:-}" = --check ] && continue
  if [ -d "$sibling" ] && [ ! -L "$sibling" ]; then
    mount -t tmpfs -o ro,size=4k,mode=755 mail_gateway_hidden "$sibling"
  elif [ -f "$sibling" ] && [ ! -L "$sibling" ]; then
    mount --bind /dev/null "$sibling"
  fi
done
echo "[isolate] hidden beside the checkout: ${hidden[*]:-(nothing)}"
