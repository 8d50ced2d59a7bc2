#!/usr/bin/env bash
# Real media of people for the multi-person tests and benchmarks, taken from
# Debian's opencv-doc package (Apache-2.0 AND BSD-3-Clause per its
# debian/copyright): vtest.avi (people walking, 768x576, 10 fps) and
# basketball1.png / basketball2.png (two people in a room). They are not
# committed (the package does not state each sample's provenance); the tests
# look for them in .tools/media (or $HYBRIK_TEST_MEDIA) and skip without them,
# unless HYBRIK_REQUIRE_MEDIA=1 (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${HYBRIK_TEST_MEDIA:-.tools/media}"
want=(vtest.avi basketball1.png basketball2.png)
missing=0
for f in "${want[@]}"; do [ -f "$dest/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
( cd "$tmp" && apt-get download -qq opencv-doc >/dev/null 2>&1 ) || {
  apt-get update -qq >/dev/null && ( cd "$tmp" && apt-get download -qq opencv-doc >/dev/null ); }
dpkg-deb -x "$tmp"/opencv-doc_*.deb "$tmp/x"
mkdir -p "$dest"
for f in "${want[@]}"; do
  cp "$tmp/x/usr/share/doc/opencv-doc/examples/data/$f" "$dest/$f"
done
echo "test media in $dest: ${want[*]}"
