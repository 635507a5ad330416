#!/usr/bin/env bash
# A project's GPU test job, as docs/ci.md describes it: build a test binary
# on the host (static, since the guest has no libc), put it into a dxvmm
# guest with /dev/dxg and run it there; the job's status is the test's, and
# its JUnit report comes back with --collect.
# Here the "project" is dxvmm's own guest tools: dxgtest, built fresh,
# injected over the image's copy.
#
# Usage: ci/gpu-job.sh   (after ci/setup.sh --no-boot)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "[gpu-job] building the test binary (static)"
guest-tools/build-static.sh target/gpu-tests >/dev/null

dxvmm=target/release/dxvmm
[ -x "$dxvmm" ] || cargo build --release --locked -q -p dxvmm

echo "[gpu-job] $dxvmm run --config ci/example/dxvmm.toml"
"$dxvmm" run --config ci/example/dxvmm.toml
echo "[gpu-job] JUnit report: target/dxvmm-example-junit.xml"

echo "[gpu-job] the same with flags only"
exec "$dxvmm" run --timeout 120 --inject target/gpu-tests/dxgtest:/bin/dxgtest -- dxgtest procs 8
