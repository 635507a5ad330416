#!/usr/bin/env bash
# Gives the current user read-write access to /dev/kvm on a CI runner host
# (GitHub's Ubuntu runners ship /dev/kvm as root:kvm 0660), through a udev
# rule so that it also holds after the device is re-created. Run on the host,
# before a container job starts or in a job that runs on the host itself.
set -euo pipefail

if [ ! -e /dev/kvm ]; then
	echo "kvm-access: this runner has no /dev/kvm (dxvmm will use its user-mode engine)" >&2
	exit 0
fi
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"' |
	$sudo tee /etc/udev/rules.d/99-dxvmm-kvm.rules >/dev/null
$sudo udevadm control --reload-rules
$sudo udevadm trigger --name-match=kvm
ls -l /dev/kvm
