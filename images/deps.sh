#!/usr/bin/env bash
# Installs the Debian packages dxvmm builds and runs with. Idempotent: asks apt
# only for what is missing. Needs root (or sudo) on a Debian 12 host.
#
# bookworm-backports is added as a source: Mesa's lavapipe (the Vulkan driver
# the tests run on where the host has no GPU) comes from there, 25.0 rather
# than bookworm's 22.3.
set -euo pipefail

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
apt_get() { DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 "$@"; }

pkgs=(
	# guest images
	linux-source-6.1 busybox-static cpio kmod xz-utils gzip
	# UML kernel and guest module builds
	build-essential bc flex bison libelf-dev patch
	# Debian's own UML (reference kernel, modules)
	user-mode-linux
	# Vulkan loader (the driver comes from backports below)
	libvulkan1
	# trace tests: the Wireshark dissector, run by tshark (noninteractive: not setuid)
	tshark
)

updated=0
apt_update() { [ "$updated" -eq 1 ] || { apt_get update -q >/dev/null; updated=1; }; }

if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
	echo "          adding bookworm-backports to the apt sources"
	echo "deb http://deb.debian.org/debian bookworm-backports main" |
		$sudo tee /etc/apt/sources.list.d/dxvmm-backports.list >/dev/null
	apt_update
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done

# Headers of the cloud kernel the KVM guest runs (guest modules build against
# them). The kernel's ABI name moves with point releases: resolve it from a
# fresh package list when the cached one names headers that are gone.
cloud_headers() {
	local img
	img=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
	[ -n "$img" ] && echo "linux-headers-${img#linux-image-}"
}
has_candidate() { apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'; }
headers=$(cloud_headers || true)
if [ -z "$headers" ] || ! has_candidate "$headers"; then
	apt_update
	headers=$(cloud_headers) || { echo "deps: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
fi
installed "$headers" || missing+=("$headers")

# lavapipe from backports (Mesa 25).
mesa=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
mesa_backports=0
case "$mesa" in 2[5-9].* | [3-9][0-9].*) ;; *) mesa_backports=1 ;; esac

if [ "${#missing[@]}" -eq 0 ] && [ "$mesa_backports" -eq 0 ]; then
	echo "          all host packages present"
	exit 0
fi
apt_update
log=$(mktemp /tmp/dxvmm-apt.XXXXXX.log)
if [ "${#missing[@]}" -ne 0 ]; then
	echo "          installing: ${missing[*]}"
	apt_get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1 ||
		{ tail -n 20 "$log" >&2; echo "deps: apt-get install failed (log: $log)" >&2; exit 1; }
fi
if [ "$mesa_backports" -eq 1 ]; then
	echo "          installing: mesa-vulkan-drivers from bookworm-backports (lavapipe)"
	apt_get install -y -q --no-install-recommends -t bookworm-backports mesa-vulkan-drivers >"$log" 2>&1 ||
		{ tail -n 20 "$log" >&2; echo "deps: apt-get install of mesa-vulkan-drivers failed (log: $log)" >&2; exit 1; }
fi
rm -f "$log"
