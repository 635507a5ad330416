#!/usr/bin/env bash
# Installs the Debian packages dxvmm builds and runs with. Idempotent: asks apt
# only for what is missing. Needs root (or sudo) on a Debian 12 host.
set -euo pipefail

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo

pkgs=(
	# guest images
	linux-source-6.1 busybox-static cpio kmod xz-utils gzip
	# UML kernel build
	build-essential bc flex bison libelf-dev
	# Debian's own UML (reference kernel, modules)
	user-mode-linux
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Headers of the cloud kernel the KVM guest runs (guest modules build against them).
updated=0
apt_update() { [ "$updated" -eq 1 ] || { $sudo apt-get update -q >/dev/null; updated=1; }; }
cloud_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$cloud_pkg" ]; then
	apt_update
	cloud_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
headers=linux-headers-${cloud_pkg#linux-image-}
dpkg-query -W -f='${Status}' "$headers" 2>/dev/null | grep -q "install ok installed" || missing+=("$headers")

if [ "${#missing[@]}" -eq 0 ]; then
	echo "          all host packages present"
	exit 0
fi
echo "          installing: ${missing[*]}"
apt_update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/dxvmm-apt.log 2>&1 ||
	{ tail -n 20 /tmp/dxvmm-apt.log >&2; echo "deps: apt-get install failed" >&2; exit 1; }
