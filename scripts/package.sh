#!/usr/bin/env bash
# Debian packages of the extension, one per PostgreSQL major version, built with
# `cargo pgrx package` (release) and laid out as Debian's and PGDG's PostgreSQL packages are:
# /usr/lib/postgresql/NN/lib and /usr/share/postgresql/NN/extension.
#   bash scripts/package.sh              15, 16, 17 and 18
#   bash scripts/package.sh 15           one version
#   bash scripts/package.sh --debug 15   unoptimised, into target/debian-debug/ (the package
#                                        test in scripts/test.sh: it reuses the suite's build)
# Writes target/debian/postgresql-NN-mail-gateway_VERSION_ARCH.deb. Maintainer: DEBFULLNAME
# and DEBEMAIL, as for Debian's own tools.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=() out=$PWD/target/debian
if [ "${1:-}" = --debug ]; then profile=(--debug) out=$PWD/target/debian-debug; shift; fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(15 16 17 18)

bash scripts/setup.sh
for major in "${versions[@]}"; do [ "$major" = 15 ] || { bash scripts/pg-versions.sh; break; }; done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
maintainer="${DEBFULLNAME:-mail_gateway maintainers} <${DEBEMAIL:-maintainers@users.noreply.h-seed-3020b2e1.example}>"
mkdir -p "$out"
# mail-gateway-deliver does not depend on the PostgreSQL version: built once.
if [ ${#profile[@]} -gt 0 ]; then
  cargo build -p mail_gateway_deliver && deliver=$PWD/target/debug/mail-gateway-deliver
else
  cargo build --release -p mail_gateway_deliver && deliver=$PWD/target/release/mail-gateway-deliver
fi

for major in "${versions[@]}"; do
  pg_config=$(bash scripts/pg-versions.sh bin "$major")/pg_config
  name=postgresql-$major-mail-gateway
  stage=$out/$name
  rm -rf "$stage"
  printf '\n==> %s %s (cargo pgrx package, %s)\n' "$name" "$version" "$("$pg_config" --version)"
  cargo pgrx package "${profile[@]}" --pg-config "$pg_config" --out-dir "$stage/pgrx"

  # pgrx lays the files out where this pg_config's PostgreSQL keeps them; a package puts them
  # where Debian's postgresql-NN does.
  lib=$stage/root/usr/lib/postgresql/$major/lib
  ext=$stage/root/usr/share/postgresql/$major/extension
  mkdir -p "$lib" "$ext"
  install -m 0644 "$stage/pgrx$("$pg_config" --pkglibdir)/mail_gateway.so" "$lib/"
  strip --strip-unneeded "$lib/mail_gateway.so"     # as Debian's dh_strip does
  install -m 0644 "$stage/pgrx$("$pg_config" --sharedir)/extension/"mail_gateway* "$ext/"
  # The MTA's pipe, beside this version's programs (psql, pg_dump …): packages for several
  # versions can be installed together without two owning one path.
  bin=$stage/root/usr/lib/postgresql/$major/bin
  mkdir -p "$bin"
  install -m 0755 "$deliver" "$bin/"
  strip --strip-unneeded "$bin/mail-gateway-deliver"

  # The libraries the .so links (libc, libssl …), as Debian's own packages compute them.
  shlibs=$(cd "$stage" && mkdir -p debian && printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$name" "$name" >debian/control \
    && dpkg-shlibdeps -O -e"$lib/mail_gateway.so" -e"$bin/mail-gateway-deliver" | sed -n 's/^shlibs:Depends=//p')
  mkdir -p "$stage/root/DEBIAN"
  cat >"$stage/root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk --exclude=DEBIAN "$stage/root" | cut -f1)
Depends: postgresql-$major, $shlibs
Section: database
Priority: optional
Description: email gateway of an ERP database, inside PostgreSQL $major
 mail_gateway keeps an ERP's email in its database: outgoing SMTP servers chosen by
 sender and priority, a mail queue sent by a background worker (with retries and DKIM),
 IMAP and POP3 mailboxes fetched and routed to business records, aliases, bounces and
 followers, all as tables and SQL functions.
 .
 Add mail_gateway to shared_preload_libraries, restart, then CREATE EXTENSION mail_gateway.
EOF
  dpkg-deb --build --root-owner-group "$stage/root" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
done
