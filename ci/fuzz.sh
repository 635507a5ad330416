#!/usr/bin/env bash
# Short fuzz runs of what takes untrusted input: each cargo-fuzz target of
# protocol/fuzz (the decoders of what a guest sends), fuzz (the device
# answering a guest's frames) and trace/fuzz (the recorder's capture of a
# guest, and a trace file someone recorded) for SECONDS (default 30). The
# three share the workspace's target dir (their builds land under its
# x86_64-unknown-linux-gnu/, apart from the host build). Longer runs:
#   ci/fuzz.sh 600
# cargo-fuzz needs a nightly compiler's -Z flags; RUSTC_BOOTSTRAP lets the
# stable toolchain accept them. Exits non-zero when a target finds a crash
# (the input is left in that crate's fuzz/artifacts/).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
case "$secs" in '' | *[!0-9]*) echo "fuzz: SECONDS must be a whole number, not '$secs'" >&2; exit 2 ;; esac

if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "[fuzz] installing cargo-fuzz"
	cargo install --locked -q cargo-fuzz
fi
# Seeds from the committed traces' frames (trace/examples/fuzz_seeds.rs);
# fuzzing still runs, from what the corpus already holds, if that fails.
if ! cargo run -q -p dxvmm-trace --example fuzz_seeds; then
	echo "[fuzz] no seeds from trace/corpus; fuzzing from the existing corpus" >&2
fi
# The trace reader's seeds are the committed traces themselves.
mkdir -p trace/fuzz/corpus/read_trace
cp trace/corpus/*.dxtrace trace/fuzz/corpus/read_trace/
export RUSTC_BOOTSTRAP=1
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
for dir in protocol/fuzz fuzz trace/fuzz; do
	for target in $(cd "$dir" && cargo fuzz list); do
		echo "[fuzz] $target for ${secs} s"
		log=$(mktemp /tmp/dxvmm-fuzz-$target.XXXXXX.log)
		if ! (cd "$dir" && cargo fuzz run --target-dir "$target_dir" "$target" -- -max_total_time="$secs" \
			-rss_limit_mb=2048) >"$log" 2>&1; then
			tail -n 40 "$log" >&2
			echo "fuzz: $target failed (log: $log; the input is in $dir/artifacts/)" >&2
			exit 1
		fi
		grep -E "^(#[0-9]+|Done)" "$log" | tail -n 1 | sed 's/^/          /'
		rm -f "$log"
	done
done
