//! Helpers shared by the integration tests and the benchmark: a process
//! with one device and context, buffers backed by host memory and mapped
//! at GPU virtual addresses, and the compute kernels.

#![allow(dead_code)]

use std::sync::Arc;

use dxvmm_host_backend::*;
use dxvmm_protocol::cmdstream::{Binding, Command, CommandStream};
use dxvmm_protocol::escape::{CreatePipeline, ShaderLanguage};

// The guest's own kernels and reference computations, so the backend's
// tests, its benchmark and the guest's suites run one program. Each test
// binary uses some of them.
#[allow(unused_imports)]
pub use dxvmm_guest_tools::shaders::{
    cpu_matmul, matmul_groups, matrix, MATMUL, SPIN, TINY, VECTOR_ADD,
};

pub fn wgsl(src: &str) -> CreatePipeline {
    CreatePipeline {
        language: ShaderLanguage::Wgsl,
        source: src.as_bytes().to_vec(),
        entry_point: "main".into(),
        error_capacity: 4096,
    }
}

/// A buffer: an allocation, the host memory behind it, and its GPU VA.
pub struct Buf {
    pub alloc: Handle,
    pub mem: Arc<VecMemory>,
    pub va: u64,
    pub size: u64,
}

impl Buf {
    pub fn binding(&self, slot: u32) -> Binding {
        Binding {
            binding: slot,
            read_only: false,
            va: self.va,
            size: self.size,
        }
    }
}

/// One process with one device and one context on the default adapter.
pub struct Fx<'a> {
    pub b: &'a dyn Backend,
    pub process: Handle,
    pub adapter: Handle,
    pub device: Handle,
    pub context: Handle,
}

impl<'a> Fx<'a> {
    pub fn new(b: &'a dyn Backend) -> Self {
        let process = b.create_process().unwrap();
        let luid = b.adapters()[0].luid;
        let adapter = b.open_adapter(process, luid).unwrap();
        let device = b.create_device(process, adapter).unwrap();
        let context = b.create_context(process, device).unwrap();
        Fx {
            b,
            process,
            adapter,
            device,
            context,
        }
    }

    pub fn buffer(&self, size: u64) -> Buf {
        let (alloc, info) = self
            .b
            .create_allocation(
                self.process,
                self.device,
                &AllocationDesc {
                    size,
                    alignment: 0,
                    cpu_visible: true,
                },
            )
            .unwrap();
        let mem = Arc::new(VecMemory::new(info.size as usize));
        self.b
            .set_allocation_memory(self.process, alloc, mem.clone())
            .unwrap();
        let va = self
            .b
            .map_gpu_va(
                self.process,
                self.device,
                &VaMapping {
                    base: 0,
                    minimum: 0,
                    maximum: 0,
                    size: info.size.next_multiple_of(GPU_PAGE_SIZE),
                    allocation: alloc,
                    allocation_offset: 0,
                },
            )
            .unwrap();
        Buf {
            alloc,
            mem,
            va,
            size: info.size,
        }
    }

    pub fn buffer_with(&self, bytes: &[u8]) -> Buf {
        let buf = self.buffer(bytes.len() as u64);
        buf.mem.write_at(0, bytes).unwrap();
        buf
    }

    pub fn pipeline(&self, src: &str) -> u32 {
        self.b
            .create_pipeline(self.process, self.device, &wgsl(src))
            .unwrap()
    }

    pub fn submit(&self, queue: Handle, commands: Vec<Command>) -> Result<()> {
        let bytes = CommandStream { commands }.encode();
        self.b
            .submit(self.process, queue, CommandBuffer::Bytes(&bytes))
    }

    /// LOCK2 then read the pages (what a guest does to read results).
    /// Submits long work on the context (64 invocations of 2M LCG rounds:
    /// a tenth of a second and more on lavapipe), so that work submitted
    /// next runs well after its submit.
    pub fn busy_gpu(&self) {
        let params = self.buffer_with(&u32_bytes(&[2_000_000]));
        let spun = self.buffer(64 * 4);
        let spin = self.pipeline(SPIN);
        self.submit(
            self.context,
            vec![Command::Dispatch {
                pipeline: spin,
                group_counts: [1, 1, 1],
                bindings: vec![params.binding(0), spun.binding(1)],
            }],
        )
        .unwrap();
    }

    pub fn read(&self, buf: &Buf) -> Vec<u8> {
        self.b.lock(self.process, buf.alloc).unwrap();
        let v = buf.mem.to_vec();
        self.b.unlock(self.process, buf.alloc).unwrap();
        v
    }

    pub fn fence(&self, initial: u64) -> Handle {
        self.b
            .create_sync_object(self.process, self.device, initial, None)
            .unwrap()
    }
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The wgpu backend on the host's default adapter, shared by a test
/// binary's tests; `None` only when `DXVMM_SKIP_GPU_TESTS=1`. Without an
/// adapter the tests fail: CI installs lavapipe, and a silent skip would
/// hide a broken install.
pub fn gpu() -> Option<&'static WgpuBackend> {
    static B: std::sync::OnceLock<Option<WgpuBackend>> = std::sync::OnceLock::new();
    B.get_or_init(new_gpu).as_ref()
}

/// A backend of its own, for tests that count every object.
pub fn new_gpu() -> Option<WgpuBackend> {
    if std::env::var("DXVMM_SKIP_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("GPU test skipped: DXVMM_SKIP_GPU_TESTS=1");
        return None;
    }
    Some(WgpuBackend::new().unwrap_or_else(|e| {
        panic!("{e}; install mesa-vulkan-drivers or set DXVMM_SKIP_GPU_TESTS=1")
    }))
}
