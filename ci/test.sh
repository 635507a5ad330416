#!/usr/bin/env bash
# Runs every dxvmm test: sets up what the tests need (packages, guest images,
# builds), then the whole workspace's unit and integration tests, which boot
# real guests. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

ci/setup.sh --no-boot

echo "[test] cargo test --workspace"
if command -v cargo-nextest >/dev/null; then
	cargo nextest run --workspace --locked --no-fail-fast
else
	cargo test --workspace --locked --no-fail-fast
fi
