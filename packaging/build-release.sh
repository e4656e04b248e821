#!/usr/bin/env bash
# Release artefacts for x86_64: a statically linked binary (runs on old node images, e.g.
# Amazon Linux 2 with glibc 2.26), a .deb and a tarball, with sha256 checksums.
#
#   packaging/build-release.sh [OUT_DIR]     (default: target/dist)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/dist}"
TARGET=x86_64-unknown-linux-gnu
NAME=containerd-shim-runsc-v1
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"

# crt-static: glibc linked in statically. With an explicit --target the flag applies to the
# binary only, not to build scripts and proc macros.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --release --locked --target "$TARGET" -p "$NAME" >&2
BIN="target/$TARGET/release/$NAME"

# No dynamic dependencies at all (no interpreter, no DT_NEEDED).
headers="$(readelf -l "$BIN")"; dynamic="$(readelf -d "$BIN")"
if grep -q 'INTERP' <<<"$headers" || grep -q '(NEEDED)' <<<"$dynamic"; then
  echo "build-release: $BIN is dynamically linked" >&2
  readelf -d "$BIN" | grep NEEDED >&2 || true
  exit 1
fi

rm -rf "$OUT"; mkdir -p "$OUT"

# .deb
PKG="$OUT/deb/${NAME}_${VERSION}_amd64"
install -D -m 0755 "$BIN" "$PKG/usr/bin/$NAME"
install -D -m 0644 README.md "$PKG/usr/share/doc/$NAME/README.md"
install -D -m 0644 packaging/runsc.toml "$PKG/usr/share/doc/$NAME/examples/runsc.toml"
install -D -m 0644 packaging/containerd/config-v2.toml "$PKG/usr/share/doc/$NAME/examples/containerd-config-v2.toml"
install -D -m 0644 packaging/containerd/config-v3.toml "$PKG/usr/share/doc/$NAME/examples/containerd-config-v3.toml"
for d in docs/*.md; do install -D -m 0644 "$d" "$PKG/usr/share/doc/$NAME/$(basename "$d")"; done
mkdir -p "$PKG/DEBIAN"
sed -e "s/@VERSION@/$VERSION/" -e "s/@SIZE@/$(du -ks "$PKG/usr" | cut -f1)/" packaging/deb/control >"$PKG/DEBIAN/control"
dpkg-deb --root-owner-group --build "$PKG" "$OUT/${NAME}_${VERSION}_amd64.deb" >&2
rm -rf "$OUT/deb"

# tarball
TAR_DIR="$OUT/${NAME}-${VERSION}-linux-amd64"
mkdir -p "$TAR_DIR"
cp "$BIN" README.md packaging/runsc.toml "$TAR_DIR/"
cp -r packaging/containerd packaging/k8s "$TAR_DIR/" 2>/dev/null || true
tar -C "$OUT" --owner=0 --group=0 --sort=name --mtime=@0 -czf "$TAR_DIR.tar.gz" "$(basename "$TAR_DIR")"
rm -rf "$TAR_DIR"

(cd "$OUT" && sha256sum -- *.deb *.tar.gz >SHA256SUMS)
cat "$OUT/SHA256SUMS"
