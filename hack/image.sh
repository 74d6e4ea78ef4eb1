#!/usr/bin/env bash
# `make image`: weft's container image, for amd64 and arm64 (ARCHS), without
# a Docker engine. Per architecture: nft and the libraries it links (the
# agent's nftables writer runs nft) unpacked from Debian's packages, pruned
# to what runs, and weft, weft-cni and weft-dns built static. build/image assembles
# them into an OCI image index: _output/image (an OCI layout) and
# _output/weft-image.tar. Same commit and packages, same digests.
# The lab's image (`make lab-image`): ARCHS=<this machine's> OUT=<dir>
# FROM_BIN=bin packs the binaries `make build` made (built the same way),
# with no tarball.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${OUT:-_output/image}-build
out=${OUT:-_output/image}
archs=${ARCHS:-amd64 arm64}
debcache=${CACHE_DIR:-/var/cache/weft-lab}/image-debs
version=$(git describe --always --dirty 2>/dev/null || echo dev)
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
pkgs=(nftables libnftables1 libnftnl11 libmnl0 libjansson4 libgmp10 libxtables12 libedit2 libtinfo6 libbsd0 libmd0 libc6)
rm -rf "$work" && mkdir -p "$work"
for arch in $archs; do
  if [[ $arch != "$(dpkg --print-architecture)" ]] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
    apt-get update -qq
  fi
  mkdir -p "$debcache/$arch" "$work/$arch/debian" "$work/$arch/weft/usr/local/bin"
  # Downloaded once; a package list change downloads again.
  if [[ $(cat "$debcache/$arch/.list" 2>/dev/null) != "${pkgs[*]}" ]]; then
    rm -f "$debcache/$arch"/*.deb
    (cd "$debcache/$arch" && apt-get download -qq "${pkgs[@]/%/:$arch}")
    echo "${pkgs[*]}" > "$debcache/$arch/.list"
  fi
  for deb in "$debcache/$arch"/*.deb; do dpkg-deb -x "$deb" "$work/$arch/debian"; done
  # Only what runs: no documentation, locales, charset converters, headers.
  (cd "$work/$arch/debian" && rm -rf usr/share etc/ld.so.conf.d usr/include usr/lib/*/gconv usr/libexec sbin/ldconfig usr/bin usr/lib/*/audit)
  if [[ -n ${FROM_BIN:-} ]]; then
    cp "$FROM_BIN/weft" "$FROM_BIN/weft-cni" "$FROM_BIN/weft-dns" "$work/$arch/weft/usr/local/bin/"
  else
    CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -tags grpcnotrace -trimpath \
      -ldflags "-s -w -X weft.dev/weft/internal/version.Version=$version" \
      -o "$work/$arch/weft/usr/local/bin/" ./cmd/weft ./cmd/weft-cni ./cmd/weft-dns
  fi
done
digest=$(cd build/image && go run . -root "../../$work" -out "../../$out" -arch "${archs// /,}" -epoch "$epoch" -version "$version")
if [[ -n ${FROM_BIN:-} ]]; then
  echo "image index $digest ($version): $out"
  exit 0
fi
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$out" -cf _output/weft-image.tar .
echo "image index $digest ($version): $out, _output/weft-image.tar ($(du -h _output/weft-image.tar | cut -f1))"
for arch in $archs; do
  echo "  $arch: $(du -sh "$work/$arch/debian" | cut -f1) from Debian ($(find "$work/$arch/debian" -type f | wc -l) files), weft $(du -h "$work/$arch/weft/usr/local/bin/weft" | cut -f1), weft-cni $(du -h "$work/$arch/weft/usr/local/bin/weft-cni" | cut -f1), weft-dns $(du -h "$work/$arch/weft/usr/local/bin/weft-dns" | cut -f1)"
done
