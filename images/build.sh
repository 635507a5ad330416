#!/usr/bin/env bash
# Builds dxvmm's guest images into the cache ($DXVMM_CACHE, default
# ~/.cache/dxvmm), each rebuilt only when its inputs change:
#
#   images/uml/linux            UML kernel from Debian's linux-source-6.1 + uml.config
#   images/uml/build            its build tree (out-of-tree modules build against it)
#   images/cloud/vmlinuz        Debian's x86 cloud kernel (KVM engine), modules beside it
#   images/initramfs.cpio.gz    busybox-static, /init, modules for both kernels,
#                               dxgkrnl.ko (guest-kernel/) for both, guest tools
#
# Usage: images/build.sh [--deps-only] [--no-deps]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${DXVMM_CACHE:-$HOME/.cache/dxvmm}
out=$cache/images
jobs=$(nproc)
mkdir -p "$out"

step=0
steps=5
say() { step=$((step + 1)); printf '[images %d/%d] %s\n' "$step" "$steps" "$*"; }
note() { printf '          %s\n' "$*"; }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }

deps=1
for arg in "$@"; do
	case "$arg" in
	--no-deps) deps=0 ;;
	--deps-only) deps=2 ;;
	*) die "unknown argument '$arg' (expected --deps-only or --no-deps)" ;;
	esac
done

# --- 1. host packages -------------------------------------------------------
say "host packages"
if [ "$deps" -ne 0 ]; then
	"$here/deps.sh"
fi
[ "$deps" -eq 2 ] && exit 0

# Hash of files and strings: the cache key of one output.
key_of() {
	{
		for f in "$@"; do
			if [ -f "$f" ]; then sha256sum <"$f"; else printf '%s\n' "$f"; fi
		done
	} | sha256sum | cut -c1-16
}

# --- 2. UML kernel ----------------------------------------------------------
say "UML guest kernel (linux-source-6.1 + images/uml.config)"
src_tar=/usr/src/linux-source-6.1.tar.xz
[ -f "$src_tar" ] || die "$src_tar is missing (apt-get install linux-source-6.1)"
src_ver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
# Bump uml_recipe when the build steps below change what they produce.
uml_recipe=1
patches=("$here"/uml-patches/*.patch)
patch_key=$(key_of "${patches[@]}")
uml_key=$(key_of "$here/uml.config" "linux-source-6.1=$src_ver" "uml-recipe=$uml_recipe" "patches=$patch_key")
src_dir=$cache/src/linux-source-6.1-$src_ver-$patch_key
uml_build=$cache/uml-build-$uml_key
if [ -x "$uml_build/linux" ] && [ -f "$uml_build/.dxvmm-done" ]; then
	note "cached: $uml_build"
else
	if [ ! -f "$src_dir/.dxvmm-unpacked" ]; then
		note "unpacking $src_tar"
		rm -rf "$src_dir" && mkdir -p "$src_dir"
		tar -xJf "$src_tar" -C "$src_dir" --strip-components=1
		for p in "${patches[@]}"; do
			note "applying $(basename "$p")"
			patch -s -p1 -d "$src_dir" <"$p" || die "$(basename "$p") does not apply to linux-source-6.1 $src_ver"
		done
		touch "$src_dir/.dxvmm-unpacked"
	fi
	rm -rf "$uml_build" && mkdir -p "$uml_build"
	note "configuring (defconfig + uml.config)"
	make -s -C "$src_dir" O="$uml_build" ARCH=um defconfig >/dev/null
	KCONFIG_CONFIG="$uml_build/.config" "$src_dir/scripts/kconfig/merge_config.sh" \
		-m -O "$uml_build" "$uml_build/.config" "$here/uml.config" >/dev/null
	make -s -C "$src_dir" O="$uml_build" ARCH=um olddefconfig >/dev/null
	for opt in VIRTIO_UML VIRTIO_CONSOLE BLK_DEV_INITRD MODULES HOSTFS MAGIC_SYSRQ; do
		grep -q "^CONFIG_$opt=y" "$uml_build/.config" || die "CONFIG_$opt did not survive olddefconfig"
	done
	# The AMX patch puts 12 KiB of FP state in thread_info, at the stack's base.
	grep -q "^CONFIG_KERNEL_STACK_ORDER=3" "$uml_build/.config" || die "CONFIG_KERNEL_STACK_ORDER=3 did not survive olddefconfig"
	note "building with $jobs jobs (a few minutes on two cores; log: $uml_build/build.log)"
	start=$(date +%s)
	if ! make -C "$src_dir" O="$uml_build" ARCH=um -j"$jobs" linux modules >"$uml_build/build.log" 2>&1; then
		tail -n 30 "$uml_build/build.log" >&2
		die "UML kernel build failed (see $uml_build/build.log)"
	fi
	note "built in $(( $(date +%s) - start )) s"
	touch "$uml_build/.dxvmm-done"
	# Earlier builds and sources (other inputs) are about 1.5 GiB each.
	for d in "$cache"/uml-build-* "$cache"/src/linux-source-6.1-*; do
		[ "$d" = "$uml_build" ] || [ "$d" = "$src_dir" ] || rm -rf "$d"
	done
fi
mkdir -p "$out/uml"
ln -sfn "$uml_build" "$out/uml/build"
ln -sfn "$uml_build/linux" "$out/uml/linux"
uml_kver=$(make -s -C "$src_dir" O="$uml_build" ARCH=um kernelrelease 2>/dev/null | tail -n 1)

# --- 3. Debian's cloud kernel (KVM engine) ----------------------------------
say "Debian cloud kernel (linux-image-cloud-amd64)"
cloud_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$cloud_pkg" ] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update)"
cloud_kver=${cloud_pkg#linux-image-}
cloud_ver=$(apt-cache policy "$cloud_pkg" | awk '/Candidate:/{print $2}')
cloud_dir=$cache/cloud-$cloud_kver-$cloud_ver
if [ -f "$cloud_dir/.dxvmm-done" ]; then
	note "cached: $cloud_dir"
else
	rm -rf "$cloud_dir" && mkdir -p "$cloud_dir/deb"
	note "downloading $cloud_pkg $cloud_ver"
	(cd "$cloud_dir/deb" && apt-get download -q -o APT::Sandbox::User=root "$cloud_pkg" >/dev/null)
	dpkg -x "$cloud_dir"/deb/*.deb "$cloud_dir/root"
	# modules.dep is made at install time, not shipped in the package.
	depmod -b "$cloud_dir/root" "$cloud_kver"
	rm -rf "$cloud_dir/deb"
	touch "$cloud_dir/.dxvmm-done"
fi
[ -d "/usr/src/linux-headers-$cloud_kver" ] || note "warning: linux-headers-$cloud_kver not installed (deps.sh installs it)"
mkdir -p "$out/cloud"
ln -sfn "$cloud_dir/root/boot/vmlinuz-$cloud_kver" "$out/cloud/vmlinuz"
ln -sfn "$cloud_dir/root/lib/modules/$cloud_kver" "$out/cloud/modules"
ln -sfn "/usr/src/linux-headers-$cloud_kver" "$out/cloud/headers"

# --- 4. guest module dxgkrnl.ko for both kernels -----------------------------
say "guest module dxgkrnl.ko (guest-kernel/, both kernels)"
# Its inputs: the sources (paths relative to guest-kernel/, sorted).
mod_files=$(cd "$root/guest-kernel" && find . -type f ! -name '*.mod.c' \( -name '*.c' -o -name '*.h' \
	-o -name Kbuild -o -name Makefile \) -print | LC_ALL=C sort)
[ -n "$mod_files" ] || die "no sources in $root/guest-kernel"
mod_src_key=$(cd "$root/guest-kernel" && key_of $mod_files $(printf "name:%s " $mod_files))
# build_module NAME KDIR KEY [make args...]: sets mod_ko to the built module.
# The sources are copied out so that a build leaves the checkout clean.
build_module() {
	local name=$1 kdir=$2 key=$3 dir
	shift 3
	dir=$cache/dxgkrnl-$name-$key
	mod_ko=$dir/dxgkrnl.ko
	if [ -f "$dir/.dxvmm-done" ] && [ -f "$mod_ko" ]; then
		note "cached: $mod_ko"
		return
	fi
	rm -rf "$dir" && mkdir -p "$dir"
	# shellcheck disable=SC2086 # one path per word
	(cd "$root/guest-kernel" && cp --parents $mod_files "$dir/")
	note "building for $name"
	if ! make -C "$kdir" M="$dir" "$@" modules >"$dir/build.log" 2>&1; then
		tail -n 30 "$dir/build.log" >&2
		die "dxgkrnl.ko does not build for $name (see $dir/build.log)"
	fi
	if grep -q "warning:" "$dir/build.log"; then
		grep "warning:" "$dir/build.log" | head -n 10 >&2
		die "dxgkrnl.ko builds with warnings for $name (see $dir/build.log)"
	fi
	touch "$dir/.dxvmm-done"
	for d in "$cache"/dxgkrnl-"$name"-*; do
		[ "$d" = "$dir" ] || rm -rf "$d"
	done
}
cloud_headers=/usr/src/linux-headers-$cloud_kver
[ -d "$cloud_headers" ] || die "$cloud_headers is missing (images/deps.sh installs linux-headers-$cloud_kver)"
headers_ver=$(dpkg-query -W -f='${Version}' "linux-headers-$cloud_kver" 2>/dev/null || echo unknown)
build_module uml "$uml_build" "$(key_of "src=$mod_src_key" "uml=$uml_key" "$uml_kver")" ARCH=um
uml_mod=$mod_ko
build_module cloud "$cloud_headers" "$(key_of "src=$mod_src_key" "$cloud_kver=$headers_ver")"
cloud_mod=$mod_ko

# Static guest tools (dxginfo, dxgtest), when the checkout has their recipe.
# Keyed by the Rust sources they are built from.
tools_script=$root/guest-tools/build-static.sh
tools_dir=
if [ -f "$tools_script" ]; then
	tool_files=$(cd "$root" && find libdxg guest-tools protocol -path '*/target' -prune -o -type f \
		\( -name '*.rs' -o -name Cargo.toml -o -name '*.sh' \) -print 2>/dev/null | LC_ALL=C sort)
	tools_key=$(cd "$root" && key_of Cargo.lock $tool_files $(printf "name:%s " $tool_files))
	tools_dir=$cache/guest-tools-$tools_key
	if [ -f "$tools_dir/.dxvmm-done" ]; then
		note "cached: $tools_dir"
	else
		rm -rf "$tools_dir" && mkdir -p "$tools_dir/bin"
		note "building static guest tools (guest-tools/build-static.sh; log: $tools_dir/build.log)"
		if ! bash "$tools_script" "$tools_dir/bin" >"$tools_dir/build.log" 2>&1; then
			tail -n 30 "$tools_dir/build.log" >&2
			die "guest-tools/build-static.sh failed (see $tools_dir/build.log)"
		fi
		touch "$tools_dir/.dxvmm-done"
		for d in "$cache"/guest-tools-*; do
			[ "$d" = "$tools_dir" ] || rm -rf "$d"
		done
	fi
	note "guest tools: $(cd "$tools_dir/bin" && echo *)"
else
	note "no guest-tools/build-static.sh yet: initramfs without guest tools"
fi

# --- 5. initramfs shared by both kernels ------------------------------------
say "initramfs (busybox-static, /init, modules, guest tools)"
busybox=/bin/busybox
bb_ver=$(dpkg-query -W -f='${Version}' busybox-static)
# Modules the init loads on the cloud kernel (built into the UML kernel).
cloud_mods="virtio virtio_ring virtio_mmio virtio_console"
guest_extra=${DXVMM_GUEST_EXTRA:-}
initrd_key=$(key_of "$here/init" "$here/build.sh" "busybox=$bb_ver" "uml=$uml_key" \
	"cloud=$cloud_kver-$cloud_ver" "$cloud_mods" "$uml_mod" "$cloud_mod" \
	"tools=$tools_dir" $guest_extra)
initrd=$cache/initramfs-$initrd_key.cpio.gz
if [ -f "$initrd" ]; then
	note "cached: $initrd"
else
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,mnt,etc,lib/modules}
	cp "$busybox" "$stage/bin/busybox"
	for applet in $("$busybox" --list-full); do
		[ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
	done
	install -m 0755 "$here/init" "$stage/init"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
	printf 'root:x:0:\n' >"$stage/etc/group"

	# Cloud kernel modules: the listed ones and what they depend on.
	src_mods=$cloud_dir/root/lib/modules/$cloud_kver
	dst_mods=$stage/lib/modules/$cloud_kver
	mkdir -p "$dst_mods"
	need=""
	for m in $cloud_mods; do
		path=$(awk -F: -v m="/$m.ko" 'index($1, m) && substr($1, length($1) - length(m) + 1) == m {print $1; exit}' "$src_mods/modules.dep")
		[ -n "$path" ] || die "module $m not in $cloud_kver"
		need="$need $path $(awk -F: -v p="$path" '$1 == p {print $2}' "$src_mods/modules.dep")"
		echo "$m" >>"$dst_mods/dxvmm.load"
	done
	for p in $need; do
		mkdir -p "$dst_mods/$(dirname "$p")"
		cp "$src_mods/$p" "$dst_mods/$p"
	done
	cp "$src_mods"/modules.order "$src_mods"/modules.builtin* "$dst_mods/" 2>/dev/null || true

	# dxgkrnl for each kernel, loaded after the modules it needs.
	install -D -m 0644 "$cloud_mod" "$dst_mods/extra/dxgkrnl.ko"
	echo dxgkrnl >>"$dst_mods/dxvmm.load"
	depmod -b "$stage" "$cloud_kver"
	uml_mods=$stage/lib/modules/$uml_kver
	install -D -m 0644 "$uml_mod" "$uml_mods/extra/dxgkrnl.ko"
	cp "$uml_build"/modules.order "$uml_build"/modules.builtin* "$uml_mods/" 2>/dev/null || true
	echo dxgkrnl >"$uml_mods/dxvmm.load"
	depmod -b "$stage" "$uml_kver"

	# Guest tools, when built (step 4).
	if [ -n "$tools_dir" ]; then
		for f in "$tools_dir"/bin/*; do
			[ -f "$f" ] && install -m 0755 "$f" "$stage/usr/bin/"
		done
	fi

	# Extra files for the guest (guest tools, modules of later stages).
	for f in $guest_extra; do
		cp -a "$f" "$stage/"
	done

	(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc --reproducible --quiet) | gzip -9n >"$initrd.tmp"
	mv "$initrd.tmp" "$initrd"
	note "$(du -h "$initrd" | cut -f1) $initrd"
fi
ln -sfn "$initrd" "$out/initramfs.cpio.gz"

cat >"$out/manifest" <<EOM
uml_kernel=$out/uml/linux
uml_release=$uml_kver
cloud_kernel=$out/cloud/vmlinuz
cloud_release=$cloud_kver
initramfs=$out/initramfs.cpio.gz
EOM
echo "images ready in $out"
