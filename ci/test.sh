#!/usr/bin/env bash
# Runs every dxvmm test: installs what the tests need and builds the guest
# images (images/build.sh), then runs the whole workspace's unit and
# integration tests, which boot real guests. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
	echo "test: cargo not found: install Rust 1.87 or newer (https://rustup.rs), then run this again" >&2
	exit 1
fi

images/build.sh

# The decoders of what the guest sends, fuzzed briefly (ci/fuzz.sh 600 for longer).
ci/fuzz.sh 30

echo "[test] the workspace's tests"
if command -v cargo-nextest >/dev/null; then
	cargo nextest run --workspace --locked --no-fail-fast
else
	cargo test --workspace --locked --no-fail-fast
fi
