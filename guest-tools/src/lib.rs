//! dxvmm's guest tools: `dxginfo` lists the guest's adapters as `dxvmm gpus`
//! lists the host's; `dxgtest` runs the driver suites (`abuse`, `procs`,
//! `roundtrip`, `compute`); `dxgbench` the compute benchmarks.
//! docs/guest-tools.md describes their output.

pub mod abuse;
pub mod bench;
pub mod compute;
pub mod procs;
pub mod report;
pub mod roundtrip;
pub mod shaders;
pub mod sys;
pub mod tap;
