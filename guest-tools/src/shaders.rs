//! The compute kernels of the `compute` suite and of dxgbench (the same
//! WGSL as host-backend's benchmark, so guest and native run one program).

/// c = a + b (f32).
pub const VECTOR_ADD: &str = "
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&c)) {
        c[id.x] = a[id.x] + b[id.x];
    }
}
";

/// C = A x B for n x n row-major f32 matrices, n in `dims[0]`; 16 x 16
/// tiles in workgroup memory; one workgroup per 16 x 16 block of C.
pub const MATMUL: &str = "
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> dims: array<u32>;
var<workgroup> ta: array<f32, 256>;
var<workgroup> tb: array<f32, 256>;
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) g: vec3<u32>,
        @builtin(local_invocation_id) l: vec3<u32>) {
    let n = dims[0];
    let row = g.y;
    let col = g.x;
    var acc = 0.0;
    let tiles = (n + 15u) / 16u;
    for (var t = 0u; t < tiles; t++) {
        let ac = t * 16u + l.x;
        let br = t * 16u + l.y;
        var va = 0.0;
        if (row < n && ac < n) { va = a[row * n + ac]; }
        var vb = 0.0;
        if (br < n && col < n) { vb = b[br * n + col]; }
        ta[l.y * 16u + l.x] = va;
        tb[l.y * 16u + l.x] = vb;
        workgroupBarrier();
        for (var k = 0u; k < 16u; k++) {
            acc += ta[l.y * 16u + k] * tb[k * 16u + l.x];
        }
        workgroupBarrier();
    }
    if (row < n && col < n) {
        c[row * n + col] = acc;
    }
}
";

/// total[0] += the sum of `data` (u32, wrapping): each invocation sums a
/// grid-strided share, each workgroup reduces in shared memory, one atomic
/// add per workgroup.
pub const REDUCE: &str = "
@group(0) @binding(0) var<storage, read> data: array<u32>;
@group(0) @binding(1) var<storage, read_write> total: array<atomic<u32>>;
var<workgroup> part: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>,
        @builtin(local_invocation_id) l: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let n = arrayLength(&data);
    let stride = groups.x * 256u;
    var s = 0u;
    for (var i = g.x; i < n; i += stride) {
        s += data[i];
    }
    part[l.x] = s;
    workgroupBarrier();
    for (var w = 128u; w > 0u; w = w / 2u) {
        if (l.x < w) {
            part[l.x] += part[l.x + w];
        }
        workgroupBarrier();
    }
    if (l.x == 0u) {
        atomicAdd(&total[0], part[0]);
    }
}
";

/// The smallest useful dispatch: one invocation bumps a counter.
pub const TINY: &str = "
@group(0) @binding(0) var<storage, read_write> x: array<u32>;
@compute @workgroup_size(1)
fn main() {
    x[0] = x[0] + 1u;
}
";

/// A long dispatch: every invocation runs `params[0]` rounds of an LCG
/// (a loop count the compiler cannot see) and stores the result.
pub const SPIN: &str = "
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    var v = id.x;
    for (var i = 0u; i < params[0]; i++) {
        v = v * 1664525u + 1013904223u;
    }
    if (id.x < arrayLength(&out)) {
        out[id.x] = v;
    }
}
";

/// WGSL that must not compile (an undeclared identifier).
pub const BROKEN: &str = "
@group(0) @binding(0) var<storage, read_write> x: array<u32>;
@compute @workgroup_size(1)
fn main() {
    x[0] = no_such_value + 1u;
}
";

/// shaders/scale.wgsl compiled to SPIR-V by build.rs:
/// dst[i] = src[i] * 3 + 1.
pub const SCALE_SPV: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/scale.spv"));

/// Workgroups of [`MATMUL`] for an n x n product.
pub fn matmul_groups(n: u32) -> [u32; 3] {
    let g = n.div_ceil(16);
    [g, g, 1]
}

/// A deterministic n x n matrix with small values (exact sums in f32).
pub fn matrix(n: usize, seed: u32) -> Vec<f32> {
    (0..n * n)
        .map(|i| ((i as u32).wrapping_mul(seed.wrapping_mul(2654435761)) >> 28) as f32 - 8.0)
        .collect()
}

/// C = A x B on the CPU.
pub fn cpu_matmul(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            for j in 0..n {
                c[i * n + j] += aik * b[k * n + j];
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spirv_module_is_embedded() {
        assert!(SCALE_SPV.len() > 20 && SCALE_SPV.len().is_multiple_of(4));
        assert_eq!(&SCALE_SPV[..4], &0x0723_0203u32.to_le_bytes());
    }

    #[test]
    fn cpu_matmul_of_identity() {
        let a = matrix(4, 3);
        let mut id = vec![0.0; 16];
        for i in 0..4 {
            id[i * 4 + i] = 1.0;
        }
        assert_eq!(cpu_matmul(&a, &id, 4), a);
        assert_eq!(matmul_groups(17), [2, 2, 1]);
    }
}
