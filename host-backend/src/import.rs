//! Guest RAM as GPU memory: VK_EXT_external_memory_host.
//!
//! An allocation's CPU side is the guest's own pages. Without this, every
//! upload copies them into a mapped staging buffer and every download copies
//! a staging buffer back into them: the host CPU touches each byte once more
//! than a native program's `write_buffer` would. With it, dxvmm imports guest
//! RAM into Vulkan (`VkImportMemoryHostPointerInfoEXT`), wraps the import in a
//! wgpu buffer, and transfers become GPU copies between that buffer and the
//! allocation's: the GPU reads and writes the guest's pages itself.
//!
//! Guest RAM is imported in chunks of [`IMPORT_CHUNK`] as transfers first
//! touch them (a driver such as NVIDIA's pins what it imports, so only the
//! parts of RAM that ever held an allocation are pinned), and each import
//! lives as long as the device. An import holds the region's keep-alive
//! ([`HostRegion::keep`]) until Vulkan has freed it, so guest RAM cannot be
//! unmapped under the GPU. A chunk the driver refuses is remembered and its
//! transfers go through staging, as on an adapter without the extension.
//!
//! `DXVMM_GPU_HOST_IMPORT=0` turns it off (for comparisons).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ash::vk;
use wgpu::hal::api::Vulkan;

use crate::memory::{HostRegion, HostSpan};

/// Bytes of guest RAM per import.
pub(crate) const IMPORT_CHUNK: u64 = 64 << 20;

/// Environment variable that disables host-memory import when set to 0.
pub const HOST_IMPORT_ENV: &str = "DXVMM_GPU_HOST_IMPORT";

const HANDLE_TYPE: vk::ExternalMemoryHandleTypeFlags =
    vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;

/// Whether the adapter can import host memory: the device must then be
/// opened with [`EXTENSION`].
pub(crate) fn available(adapter: &wgpu::Adapter) -> bool {
    // SAFETY: the hal adapter is only read (its instance and physical
    // device handles), never destroyed.
    let Some(hal) = (unsafe { adapter.as_hal::<Vulkan>() }) else {
        return false;
    };
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: the physical device belongs to this instance.
    let exts = unsafe { instance.enumerate_device_extension_properties(hal.raw_physical_device()) };
    exts.is_ok_and(|exts| {
        exts.iter()
            .any(|e| e.extension_name_as_c_str() == Ok(EXTENSION))
    })
}

/// The device extension to enable.
pub(crate) const EXTENSION: &std::ffi::CStr = ash::ext::external_memory_host::NAME;

/// One GPU's imports of guest RAM.
pub(crate) struct HostImport {
    device: ash::Device,
    ext: ash::ext::external_memory_host::Device,
    /// Memory types that are host-coherent (bit i: type i): preferred, so
    /// that neither side needs flushes to see the other's writes.
    coherent_types: u32,
    /// `minImportedHostPointerAlignment`: addresses and sizes of imports
    /// are multiples of it.
    alignment: u64,
    /// (region base, chunk index) -> the import, or `None` if the driver
    /// refused it.
    chunks: Mutex<HashMap<(usize, u64), Option<wgpu::Buffer>>>,
    /// Bytes imported so far.
    imported: AtomicU64,
}

/// A piece of a transfer: `len` bytes at `offset` of the allocation's
/// buffer and at `chunk_offset` of an imported chunk.
pub(crate) struct Piece {
    pub chunk: wgpu::Buffer,
    pub chunk_offset: u64,
    pub offset: u64,
    pub len: u64,
}

impl HostImport {
    /// Ready to import on `device` (opened with [`EXTENSION`]), if the
    /// device is a Vulkan one.
    pub(crate) fn new(adapter: &wgpu::Adapter, device: &wgpu::Device) -> Option<HostImport> {
        // SAFETY: only handles and function pointers are read; wgpu keeps
        // the instance and device alive as long as `device`, which the GPU
        // holding this outlives (imports are wgpu buffers of that device).
        let hal_adapter = unsafe { adapter.as_hal::<Vulkan>() }?;
        // SAFETY: as above.
        let hal_device = unsafe { device.as_hal::<Vulkan>() }?;
        let instance = hal_adapter.shared_instance().raw_instance();
        let mut host = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
        let mut props = vk::PhysicalDeviceProperties2::default().push_next(&mut host);
        // SAFETY: the physical device belongs to this instance; `props`
        // chains a structure of the enabled extension.
        unsafe {
            instance.get_physical_device_properties2(hal_adapter.raw_physical_device(), &mut props)
        };
        let alignment = host.min_imported_host_pointer_alignment.max(1);
        if !alignment.is_power_of_two() || alignment > IMPORT_CHUNK {
            return None;
        }
        // SAFETY: as above, a query on this instance's physical device.
        let mem = unsafe {
            instance.get_physical_device_memory_properties(hal_adapter.raw_physical_device())
        };
        let coherent_types = mem
            .memory_types_as_slice()
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.property_flags
                    .contains(vk::MemoryPropertyFlags::HOST_COHERENT)
            })
            .fold(0u32, |bits, (i, _)| bits | (1 << i));
        let raw = hal_device.raw_device().clone();
        Some(HostImport {
            ext: ash::ext::external_memory_host::Device::new(instance, &raw),
            device: raw,
            coherent_types,
            alignment,
            chunks: Mutex::new(HashMap::new()),
            imported: AtomicU64::new(0),
        })
    }

    /// Bytes of guest RAM imported so far.
    pub(crate) fn imported_bytes(&self) -> u64 {
        self.imported.load(Ordering::Relaxed)
    }

    /// Splits `spans` into pieces within imported chunks; `None` if any
    /// part cannot be imported (the caller then stages the whole transfer).
    pub(crate) fn pieces(&self, device: &wgpu::Device, spans: &[HostSpan]) -> Option<Vec<Piece>> {
        let mut out = Vec::new();
        for s in spans {
            let mut done = 0u64;
            while done < s.len {
                let at = s.region_offset + done;
                let index = at / IMPORT_CHUNK;
                let start = index * IMPORT_CHUNK;
                let chunk_len = IMPORT_CHUNK.min(s.region.len - start);
                let len = (s.len - done).min(start + chunk_len - at);
                let chunk = self.chunk(device, &s.region, index)?;
                out.push(Piece {
                    chunk,
                    chunk_offset: at - start,
                    offset: s.offset + done,
                    len,
                });
                done += len;
            }
        }
        Some(out)
    }

    fn chunk(
        &self,
        device: &wgpu::Device,
        region: &HostRegion,
        index: u64,
    ) -> Option<wgpu::Buffer> {
        let mut chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        chunks
            .entry((region.base, index))
            .or_insert_with(|| {
                let r = self.import(device, region, index);
                if let Err(e) = &r {
                    tracing::info!(
                        "guest RAM at {:#x}+{:#x} stays staged: {e}",
                        region.base,
                        index * IMPORT_CHUNK
                    );
                }
                r.ok()
            })
            .clone()
    }

    fn import(
        &self,
        device: &wgpu::Device,
        region: &HostRegion,
        index: u64,
    ) -> Result<wgpu::Buffer, String> {
        let start = index * IMPORT_CHUNK;
        let len = IMPORT_CHUNK.min(region.len.saturating_sub(start));
        let addr = (region.base as u64)
            .checked_add(start)
            .ok_or("address overflow")?;
        if len == 0 || !addr.is_multiple_of(self.alignment) || !len.is_multiple_of(self.alignment) {
            return Err(format!(
                "not aligned to the driver's {} bytes",
                self.alignment
            ));
        }
        let ptr = addr as usize as *mut c_void;
        let mut host = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: `ptr..ptr + len` is mapped host memory: it lies in
        // `region`, which `region.keep` holds mapped, and the import below
        // keeps a clone of `keep` until Vulkan has freed it.
        let r = unsafe {
            (self.ext.fp().get_memory_host_pointer_properties_ext)(
                self.device.handle(),
                HANDLE_TYPE,
                ptr,
                &mut host,
            )
        };
        if r != vk::Result::SUCCESS {
            return Err(format!("vkGetMemoryHostPointerPropertiesEXT: {r}"));
        }
        let mut external = vk::ExternalMemoryBufferCreateInfo::default().handle_types(HANDLE_TYPE);
        let info = vk::BufferCreateInfo::default()
            .size(len)
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .push_next(&mut external);
        // SAFETY: a valid create info on our device.
        let buffer = unsafe { self.device.create_buffer(&info, None) }
            .map_err(|e| format!("vkCreateBuffer: {e}"))?;
        // SAFETY: `buffer` was just made on this device.
        let reqs = unsafe { self.device.get_buffer_memory_requirements(buffer) };
        let types = reqs.memory_type_bits & host.memory_type_bits;
        let destroy = |what: String| {
            // SAFETY: `buffer` is ours and unused.
            unsafe { self.device.destroy_buffer(buffer, None) };
            what
        };
        if types == 0 || reqs.size > len {
            return Err(destroy(format!(
                "no memory type fits (buffer {:#x}, host {:#x}, size {})",
                reqs.memory_type_bits, host.memory_type_bits, reqs.size
            )));
        }
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(HANDLE_TYPE)
            .host_pointer(ptr);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(len)
            .memory_type_index(pick_type(types, self.coherent_types))
            .push_next(&mut import);
        // SAFETY: as for the properties above; the allocation imports
        // `ptr..ptr + len`, aligned as the driver requires.
        let memory = unsafe { self.device.allocate_memory(&alloc, None) }
            .map_err(|e| destroy(format!("vkAllocateMemory (import): {e}")))?;
        // SAFETY: fresh buffer and memory of this device; offset 0 fits.
        if let Err(e) = unsafe { self.device.bind_buffer_memory(buffer, memory, 0) } {
            // SAFETY: both are ours and unused.
            unsafe { self.device.free_memory(memory, None) };
            return Err(destroy(format!("vkBindBufferMemory: {e}")));
        }
        let raw = self.device.clone();
        let keep = region.keep.clone();
        let free: wgpu::hal::DropCallback = Box::new(move || {
            // SAFETY: wgpu calls this once, when the buffer's last use has
            // completed; nothing else holds either handle.
            unsafe {
                raw.destroy_buffer(buffer, None);
                raw.free_memory(memory, None);
            }
            // Only now may the region be unmapped.
            drop(keep);
        });
        // SAFETY: wgpu never maps the buffer (it is not MAP_*), and `free`
        // releases the handles, which outlive every use wgpu makes of them.
        let hal = unsafe { wgpu::hal::vulkan::Buffer::from_raw_externally_owned(buffer, free) };
        self.imported.fetch_add(len, Ordering::Relaxed);
        // SAFETY: made on this device, initialized (guest RAM), the size and
        // usage of the descriptor, not zero-sized.
        Ok(unsafe {
            device.create_buffer_from_hal::<Vulkan>(
                hal,
                &wgpu::BufferDescriptor {
                    label: Some("dxvmm guest RAM"),
                    size: len,
                    usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                },
            )
        })
    }
}

/// The memory type to import with, of those allowed (`types`, one bit per
/// type): the first host-coherent one, else the first.
fn pick_type(types: u32, coherent: u32) -> u32 {
    match types & coherent {
        0 => types.trailing_zeros(),
        both => both.trailing_zeros(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coherent_memory_types_come_first() {
        assert_eq!(pick_type(0b0110, 0b0100), 2);
        assert_eq!(pick_type(0b0110, 0b1000), 1);
        assert_eq!(pick_type(0b1000, 0b1111), 3);
    }
}
