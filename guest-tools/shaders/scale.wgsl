// out[i] = in[i] * 3 + 1, compiled to SPIR-V at build time (build.rs) so
// that dxgtest sends the host a real SPIR-V module.
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&dst)) {
        dst[id.x] = src[id.x] * 3u + 1u;
    }
}
