#!/usr/bin/env bash
# Builds the guest tools (dxginfo, dxgtest, dxgbench, dxvmm-stdin) as static executables for the
# guest's initramfs, which has no libc, and copies them to OUTDIR stripped.
#
# Usage: guest-tools/build-static.sh OUTDIR
#
# Only the x86_64-unknown-linux-gnu target is needed: glibc with
# crt-static. Naming --target keeps RUSTFLAGS away from build scripts and
# keeps these objects out of the host build's target directory.
set -euo pipefail

die() { printf 'build-static: error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
out=$1
root=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
bins="dxginfo dxgtest dxgbench dxvmm-stdin"

printf 'build-static: building %s (static, %s) into %s\n' "$bins" "$target" "$out"
mkdir -p "$out"
(
	cd "$root"
	RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build --release --locked --quiet --target "$target" -p dxvmm-guest-tools
) || die "cargo build failed"

# Where cargo put them: CARGO_TARGET_DIR if set (relative to the root,
# where cargo ran), else target/.
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in
/*) ;;
*) target_dir=$root/$target_dir ;;
esac
for b in $bins; do
	src=$target_dir/$target/release/$b
	[ -x "$src" ] || die "$src was not built"
	install -m 0755 "$src" "$out/$b"
	if command -v strip >/dev/null; then
		strip "$out/$b"
	fi
	# A dynamic executable would fail in the guest with a bare "not found".
	if command -v file >/dev/null; then
		desc=$(file -b "$out/$b")
		case "$desc" in
		*"statically linked"* | *"static-pie linked"*) ;;
		*) die "$b is not static: $desc" ;;
		esac
	elif ldd "$out/$b" >/dev/null 2>&1; then
		die "$b is not static (ldd lists libraries)"
	fi
done
