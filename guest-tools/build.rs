//! Compiles shaders/scale.wgsl to SPIR-V (with naga, the compiler wgpu
//! uses) into OUT_DIR/scale.spv, which dxgtest embeds: the SPIR-V path of
//! CREATE_PIPELINE gets a module a real toolchain produced.

use std::path::PathBuf;

fn main() {
    let src_path = "shaders/scale.wgsl";
    println!("cargo:rerun-if-changed={src_path}");
    let src = std::fs::read_to_string(src_path).expect("read shaders/scale.wgsl");
    let module = naga::front::wgsl::parse_str(&src).expect("scale.wgsl parses");
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .expect("scale.wgsl validates");
    let words =
        naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), None)
            .expect("SPIR-V output");
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("scale.spv");
    std::fs::write(out, bytes).expect("write scale.spv");
}
