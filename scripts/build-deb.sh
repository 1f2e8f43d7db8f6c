#!/usr/bin/env bash
# Builds the Debian package: the pitr binary, man pages and shell completions generated from the
# binary's own clap definitions (`pitr generate-assets`), an example /etc/pitr/pitr.toml
# (a conffile) and the systemd units in packaging/systemd/. Only dpkg-deb is needed.
#
# Usage: scripts/build-deb.sh [--binary PATH] [--out DIR]
#   --binary PATH  package this pitr binary (default: cargo build --release, target/release/pitr)
#   --out DIR      where the .deb goes (default target/deb); its path is printed last
set -euo pipefail
cd "$(dirname "$0")/.."

bin=
out=target/deb
while [ $# -gt 0 ]; do
  case $1 in
    --binary) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: scripts/build-deb.sh [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --locked -p pitr
  bin=target/release/pitr
fi
[ -x "$bin" ] || { echo "build-deb: no pitr binary at $bin" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "build-deb: dpkg-deb is missing (apt-get install dpkg)" >&2; exit 1; }

version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root

install -D -m 0755 "$bin" "$root/usr/bin/pitr"
# as dh_strip does: no debug information in the package
if command -v strip >/dev/null; then strip --strip-debug "$root/usr/bin/pitr"; fi
"$bin" generate-assets --out "$work/assets"
install -d "$root/usr/share/man/man1"
for page in "$work"/assets/man/*.1; do
  gzip -9n <"$page" >"$root/usr/share/man/man1/$(basename "$page").gz"
done
install -D -m 0644 "$work/assets/completions/pitr.bash" "$root/usr/share/bash-completion/completions/pitr"
install -D -m 0644 "$work/assets/completions/_pitr" "$root/usr/share/zsh/vendor-completions/_pitr"
install -D -m 0644 "$work/assets/completions/pitr.fish" "$root/usr/share/fish/vendor_completions.d/pitr.fish"
install -D -m 0644 packaging/pitr.toml "$root/etc/pitr/pitr.toml"
for unit in packaging/systemd/*; do
  install -D -m 0644 "$unit" "$root/lib/systemd/system/$(basename "$unit")"
done
install -D -m 0644 README.md "$root/usr/share/doc/pitr/README.md"
install -m 0644 packaging/debian/copyright "$root/usr/share/doc/pitr/copyright"
for doc in docs/*.md; do install -m 0644 "$doc" "$root/usr/share/doc/pitr/"; done

install -d "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  packaging/debian/control.in >"$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"

mkdir -p "$out"
deb=$out/pitr_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
