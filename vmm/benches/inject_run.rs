//! End-to-end wall time of `dxvmm run --inject` (being written).
fn main() {}
