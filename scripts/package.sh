#!/usr/bin/env bash
# `npm run package`: the Debian package of t2cp-ar, dist/t2cp-ar_VERSION_ARCH.deb, with the
# standard tools (dpkg-shlibdeps for the libraries the addon links, dpkg-deb to build it).
# It installs:
#   /usr/bin/t2cp                                the command (node on the files below)
#   /usr/lib/t2cp-ar/                            the compiled program, the addon and its BPF
#                                                object, its runtime npm modules
#   /lib/systemd/system/t2cp-ROLE@.service       a unit per role (deploy/systemd)
#   /etc/t2cp/ROLE-example.json                  an example configuration per role (conffiles)
#   /usr/lib/ocf/resource.d/t2cp/t2cp            the Pacemaker resource agent
#   /usr/share/t2cp-ar/prometheus/t2cp.rules.yml example alerting rules
#   /usr/lib/sysctl.d/60-t2cp-ar.conf            net.core.rmem_max for the backup's buffers (at boot)
#   /usr/share/man/man8/t2cp.8.gz                the manual, from the commands' --help
#   /usr/share/doc/t2cp-ar/                      README, copyright
# Run after the build (scripts/setup.sh, which `npm run package` runs first).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(node -p "require('./package.json').version")
arch=$(dpkg --print-architecture)
name="t2cp-ar_${version}_${arch}"
out=dist/$name.deb
stage=build/deb/$name
for f in build/Release/t2cp.node build/Release/recovery_active_mode.bpf.o dist/src/cli.js dist/scripts/man-page.js; do
  [ -e "$f" ] || { echo "t2cp package: $f missing: run npm run setup first" >&2; exit 1; }
done
rm -rf --one-file-system "$stage"
lib=$stage/usr/lib/t2cp-ar
mkdir -p "$lib/build/Release" "$lib/dist" "$lib/node_modules" "$stage/usr/bin" "$stage/DEBIAN" \
  "$stage/lib/systemd/system" "$stage/etc/t2cp" "$stage/usr/lib/ocf/resource.d/t2cp" \
  "$stage/usr/share/t2cp-ar/prometheus" "$stage/usr/share/man/man8" "$stage/usr/share/doc/t2cp-ar" "$stage/usr/lib/sysctl.d"

# The program: package.json (its root and version), the compiled sources, the addon.
node -e "const p = require('./package.json'); delete p.devDependencies; p.scripts = {}; \
  require('fs').writeFileSync('$lib/package.json', JSON.stringify(p, null, 2) + '\n')"
cp -r dist/src "$lib/dist/src"
cp build/Release/t2cp.node build/Release/recovery_active_mode.bpf.o "$lib/build/Release/"
# Runtime npm modules (npm's own list of the production tree; node-addon-api only builds the addon).
npm ls --omit=dev --parseable --all 2>/dev/null | tail -n +2 | while read -r dir; do
  rel=${dir#"$PWD"/node_modules/}
  [ "$rel" = node-addon-api ] && continue
  mkdir -p "$lib/node_modules/$(dirname "$rel")"
  cp -r "$dir" "$lib/node_modules/$rel"
done
cat >"$stage/usr/bin/t2cp" <<'EOF'
#!/bin/sh
exec /usr/bin/node /usr/lib/t2cp-ar/dist/src/cli.js "$@"
EOF
chmod 755 "$stage/usr/bin/t2cp"

cp deploy/systemd/t2cp-*@.service "$stage/lib/systemd/system/"
for role in backup gateway primary; do cp "deploy/etc/$role-main.json" "$stage/etc/t2cp/$role-example.json"; done
install -m 755 scripts/ocf/t2cp "$stage/usr/lib/ocf/resource.d/t2cp/t2cp"
cp deploy/prometheus/t2cp.rules.yml "$stage/usr/share/t2cp-ar/prometheus/"
cp deploy/sysctl/60-t2cp-ar.conf "$stage/usr/lib/sysctl.d/"
node dist/scripts/man-page.js "$version" | gzip -9n >"$stage/usr/share/man/man8/t2cp.8.gz"
cp README.md "$stage/usr/share/doc/t2cp-ar/"
printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: t2cp-ar\n\nFiles: *\nLicense: %s\n' \
  "$(node -p "require('./package.json').license")" >"$stage/usr/share/doc/t2cp-ar/copyright"

# The libraries the addon links, as dpkg-shlibdeps finds their packages (it reads debian/control).
scratch=$(mktemp -d)
trap 'rm -rf --one-file-system "$scratch"' EXIT
mkdir -p "$scratch/debian"
printf 'Source: t2cp-ar\n\nPackage: t2cp-ar\nArchitecture: any\n' >"$scratch/debian/control"
shlibs=$(cd "$scratch" && dpkg-shlibdeps -O -e "$OLDPWD/build/Release/t2cp.node" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "t2cp package: dpkg-shlibdeps found no library of the addon" >&2; exit 1; }

size=$(du -sk "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: t2cp-ar
Version: $version
Architecture: $arch
Maintainer: t2cp-ar developers <t2cp-ar@localhost>
Installed-Size: $size
Depends: $shlibs, nodejs (>= 18), nftables, iproute2
Suggests: prometheus
Section: net
Priority: optional
Description: client-transparent TCP and UDP active replication for Linux
 A backup server on a mirrored switch port replays every client flow of a
 primary into its own stack, so that an identical copy of the service
 computes the same state. When the primary dies, the backup takes over the
 service address and the clients' established connections carry on,
 byte-exact, with no reset.
EOF
(cd "$stage" && find etc -type f | sed 's|^|/|') >"$stage/DEBIAN/conffiles"
mkdir -p dist
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out"
