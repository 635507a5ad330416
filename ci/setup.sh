#!/usr/bin/env bash
# Sets up dxvmm on a Debian 12 host and boots a guest:
#   1. Debian packages (images/deps.sh: kernel sources, busybox, UML, lavapipe)
#   2. guest images (images/build.sh: UML kernel, cloud kernel, initramfs)
#   3. dxvmm itself (cargo build --release)
#   4. a guest boots and shows its GPU (dxginfo, through /dev/dxg)
#
# Usage: ci/setup.sh [--no-boot]
set -euo pipefail
cd "$(dirname "$0")/.."

boot=1
for arg in "$@"; do
	case "$arg" in
	--no-boot) boot=0 ;;
	-h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "setup: unknown argument '$arg' (expected --no-boot)" >&2; exit 2 ;;
	esac
done

if ! command -v cargo >/dev/null; then
	echo "setup: cargo not found: install Rust 1.87 or newer (https://rustup.rs), then run this again" >&2
	exit 1
fi

images/build.sh

echo "[setup] building dxvmm (release)"
cargo build --release --locked -q -p dxvmm
echo "[setup] dxvmm is at target/release/dxvmm"

[ "$boot" -eq 1 ] || exit 0
echo "[setup] booting a guest that shows its GPU: target/release/dxvmm run -- dxginfo"
exec target/release/dxvmm run --timeout 120 -- sh -c 'echo "guest: $(uname -sr), /dev/dxg:"; exec dxginfo'
