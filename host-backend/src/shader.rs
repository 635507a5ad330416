//! Shader front end shared by the engines: parse WGSL or SPIR-V with naga,
//! validate, find the compute entry point, and reflect the storage buffer
//! bindings a DISPATCH must supply. Doing this ourselves (rather than
//! leaving it to the GPU driver) gives the guest the compiler's message on
//! error and lets a DISPATCH be checked before anything reaches the GPU.

use dxvmm_protocol::cmdstream::MAX_BINDINGS;
use dxvmm_protocol::escape::{CreatePipeline, ShaderLanguage};
use wgpu::naga;

use crate::error::{BackendError, Result};

/// Longest shader source accepted (escapes are bounded by the message size
/// anyway; this keeps a single compile's cost bounded).
pub const MAX_SHADER_SOURCE: usize = 1 << 20;

/// One `@group(0) @binding(n)` storage buffer the entry point uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShaderBinding {
    pub binding: u32,
    /// The shader may write it (`read_write`).
    pub writable: bool,
    /// Smallest buffer range the type fits in (one element of a runtime
    /// array).
    pub min_size: u64,
}

/// A parsed, validated compute shader.
#[derive(Debug)]
pub(crate) struct Shader {
    pub workgroup_size: [u32; 3],
    pub bindings: Vec<ShaderBinding>,
}

fn compile_error(message: impl Into<String>) -> BackendError {
    BackendError::ShaderCompile {
        message: message.into(),
    }
}

/// Parses and validates `req` and reflects its interface.
pub(crate) fn parse(req: &CreatePipeline) -> Result<Shader> {
    if req.source.len() > MAX_SHADER_SOURCE {
        return Err(BackendError::range(
            "shader source size",
            req.source.len() as u64,
            MAX_SHADER_SOURCE as u64,
        ));
    }
    // Kept for error messages: naga renders spans against the source text.
    let mut text = String::new();
    let module = match req.language {
        ShaderLanguage::Wgsl => {
            text = std::str::from_utf8(&req.source)
                .map_err(|e| compile_error(format!("WGSL source is not UTF-8: {e}")))?
                .to_owned();
            naga::front::wgsl::parse_str(&text)
                .map_err(|e| compile_error(e.emit_to_string(&text)))?
        }
        ShaderLanguage::SpirV => {
            let opts = naga::front::spv::Options {
                adjust_coordinate_space: false,
                strict_capabilities: true,
                block_ctx_dump_prefix: None,
            };
            naga::front::spv::parse_u8_slice(&req.source, &opts)
                .map_err(|e| compile_error(format!("SPIR-V: {e}")))?
        }
    };
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .map_err(|e| compile_error(e.emit_to_string(&text)))?;

    let (index, ep) = module
        .entry_points
        .iter()
        .enumerate()
        .find(|(_, ep)| ep.name == req.entry_point)
        .ok_or_else(|| compile_error(format!("no entry point named '{}'", req.entry_point)))?;
    if ep.stage != naga::ShaderStage::Compute {
        return Err(compile_error(format!(
            "entry point '{}' is not a compute shader",
            req.entry_point
        )));
    }
    let usage = info.get_entry_point(index);
    let mut bindings = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        if usage[handle].is_empty() {
            continue; // not part of this entry point's interface
        }
        let Some(rb) = &var.binding else { continue };
        let naga::AddressSpace::Storage { access } = var.space else {
            return Err(compile_error(format!(
                "binding @group({}) @binding({}): only storage buffers are supported",
                rb.group, rb.binding
            )));
        };
        if rb.group != 0 || rb.binding >= MAX_BINDINGS {
            return Err(compile_error(format!(
                "binding @group({}) @binding({}): storage buffers must be in group 0, bindings 0..{}",
                rb.group, rb.binding, MAX_BINDINGS
            )));
        }
        let min_size = u64::from(module.types[var.ty].inner.size(module.to_ctx())).max(4);
        bindings.push(ShaderBinding {
            binding: rb.binding,
            writable: access.contains(naga::StorageAccess::STORE),
            min_size,
        });
    }
    bindings.sort_by_key(|b| b.binding);
    Ok(Shader {
        workgroup_size: ep.workgroup_size,
        bindings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wgsl(src: &str) -> CreatePipeline {
        CreatePipeline {
            language: ShaderLanguage::Wgsl,
            source: src.as_bytes().to_vec(),
            entry_point: "main".into(),
            error_capacity: 1024,
        }
    }

    #[test]
    fn reflects_used_storage_bindings() {
        let s = parse(&wgsl(
            "@group(0) @binding(0) var<storage, read> a: array<u32>;
             @group(0) @binding(2) var<storage, read_write> b: array<vec4<f32>>;
             @group(0) @binding(1) var<storage, read_write> unused: array<u32>;
             @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
                 b[id.x] = vec4<f32>(f32(a[id.x]));
             }",
        ))
        .unwrap();
        assert_eq!(
            s.bindings,
            [
                ShaderBinding {
                    binding: 0,
                    writable: false,
                    min_size: 4
                },
                ShaderBinding {
                    binding: 2,
                    writable: true,
                    min_size: 16
                },
            ]
        );
        assert_eq!(s.workgroup_size, [64, 1, 1]);
    }

    #[test]
    fn errors_carry_the_compiler_message() {
        let e = parse(&wgsl(
            "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
        ))
        .unwrap_err();
        let BackendError::ShaderCompile { message } = e else {
            panic!("{e:?}")
        };
        assert!(message.contains("error"), "{message}");

        let mut p = wgsl("@compute @workgroup_size(1) fn other() {}");
        assert!(matches!(parse(&p), Err(BackendError::ShaderCompile { .. })));
        p.entry_point = "other".into();
        assert!(parse(&p).is_ok());

        let uniform = wgsl(
            "@group(0) @binding(0) var<uniform> u: vec4<f32>;
             @group(0) @binding(1) var<storage, read_write> o: array<f32>;
             @compute @workgroup_size(1) fn main() { o[0] = u.x; }",
        );
        assert!(matches!(
            parse(&uniform),
            Err(BackendError::ShaderCompile { .. })
        ));

        let spirv = CreatePipeline {
            language: ShaderLanguage::SpirV,
            source: vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0],
            entry_point: "main".into(),
            error_capacity: 0,
        };
        assert!(matches!(
            parse(&spirv),
            Err(BackendError::ShaderCompile { .. })
        ));
    }
}
