//! CPU-side memory the backend reads and writes: the guest pages behind an
//! allocation, a monitored fence's value, a command buffer.
//!
//! The backend never holds a raw pointer into guest memory. The device hands
//! in a [`HostVisibleMemory`], normally a [`GuestRanges`] over its
//! `GuestMemory` (vm-memory) and the guest-physical page list the guest sent
//! with SETEXISTINGSYSMEMPAGES; tests use [`VecMemory`].

use std::any::Any;
use std::sync::{Arc, Mutex};

use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemory, GuestMemoryBackend, GuestMemoryRegion,
    MemoryRegionAddress,
};

use crate::error::{BackendError, Result};

/// Size of the guest pages a page frame number counts.
pub const GUEST_PAGE_SIZE: u64 = 4096;

/// Byte-addressed memory the backend copies allocation contents to and from.
///
/// Offsets are relative to the start of the object (allocation, fence
/// storage); `len` bytes are reachable. Implementations check every access
/// against `len` and the memory behind it and return an error, never panic:
/// a guest may have unplugged or never populated a page.
pub trait HostVisibleMemory: Send + Sync {
    /// Bytes reachable from offset 0.
    fn len(&self) -> u64;

    /// True when no byte is reachable.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Copies `data` to `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()>;

    /// Where `[offset, offset + len)` lies in host mappings, for an engine
    /// that lets the GPU copy to and from it without the CPU touching the
    /// bytes. `None` (the default) when the memory is not mapped memory the
    /// engine may hand to the GPU, or when the range is not all backed.
    fn host_spans(&self, offset: u64, len: u64) -> Option<Vec<HostSpan>> {
        let _ = (offset, len);
        None
    }
}

/// One host mapping (a guest RAM region): its address, its length and what
/// keeps it mapped.
#[derive(Clone)]
pub struct HostRegion {
    /// Host virtual address of the region's first byte.
    pub base: usize,
    /// Bytes mapped from `base`.
    pub len: u64,
    /// Holds the mapping: whoever keeps a GPU import of it keeps this, so
    /// the region cannot be unmapped while the GPU may still reach it.
    pub keep: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for HostRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRegion")
            .field("base", &format_args!("{:#x}", self.base))
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A piece of an object's bytes that lies in one host mapping.
#[derive(Clone, Debug)]
pub struct HostSpan {
    /// Offset of the piece within the object.
    pub offset: u64,
    /// Its length.
    pub len: u64,
    /// The mapping it lies in.
    pub region: HostRegion,
    /// Its offset within `region`; `region_offset + len <= region.len`.
    pub region_offset: u64,
}

fn check(offset: u64, len: usize, total: u64) -> Result<()> {
    let end = offset.checked_add(len as u64).ok_or(BackendError::range(
        "memory offset",
        offset,
        total,
    ))?;
    if end > total {
        return Err(BackendError::range("memory access end", end, total));
    }
    Ok(())
}

/// Host memory in a `Vec`, for tests and for callers that stage bytes
/// themselves.
#[derive(Debug, Default)]
pub struct VecMemory {
    bytes: Mutex<Vec<u8>>,
}

impl VecMemory {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        VecMemory {
            bytes: Mutex::new(vec![0; len]),
        }
    }

    /// Memory holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        VecMemory {
            bytes: Mutex::new(bytes),
        }
    }

    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // The data is plain bytes: a panic elsewhere cannot leave it in a
        // state worse than the one the guest could have written.
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HostVisibleMemory for VecMemory {
    fn len(&self) -> u64 {
        self.lock().len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let v = self.lock();
        check(offset, buf.len(), v.len() as u64)?;
        let at = offset as usize;
        buf.copy_from_slice(&v[at..at + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut v = self.lock();
        check(offset, data.len(), v.len() as u64)?;
        let at = offset as usize;
        v[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A list of guest-physical ranges of a vm-memory address space, seen as one
/// contiguous run of bytes: what an allocation's SETEXISTINGSYSMEMPAGES page
/// list describes.
///
/// Generic over [`GuestAddressSpace`], so it works with `&GuestMemoryMmap`,
/// `Arc<GuestMemoryMmap>` and `GuestMemoryAtomic` (whose snapshot is taken
/// per access, so memory hot-plug between accesses is seen).
pub struct GuestRanges<AS: GuestAddressSpace> {
    mem: AS,
    /// (guest-physical start, byte length, offset of its first byte).
    ranges: Vec<(GuestAddress, u64, u64)>,
    len: u64,
}

impl<AS: GuestAddressSpace> GuestRanges<AS> {
    /// Ranges given as (guest-physical address, length) pairs, in order.
    /// Zero-length ranges are dropped; the total must not overflow.
    pub fn new(mem: AS, ranges: impl IntoIterator<Item = (u64, u64)>) -> Result<Self> {
        let mut out: Vec<(GuestAddress, u64, u64)> = Vec::new();
        let mut len = 0u64;
        for (gpa, n) in ranges {
            if n == 0 {
                continue;
            }
            gpa.checked_add(n)
                .ok_or(BackendError::param("guest range", gpa))?;
            // Merge physically contiguous neighbours: most page lists are
            // runs of consecutive frames, and fewer ranges mean fewer calls.
            match out.last_mut() {
                Some((start, l, _)) if start.0 + *l == gpa => *l += n,
                _ => out.push((GuestAddress(gpa), n, len)),
            }
            len = len
                .checked_add(n)
                .ok_or(BackendError::param("guest range total", len))?;
        }
        Ok(GuestRanges {
            mem,
            ranges: out,
            len,
        })
    }

    /// 4 KiB guest page frame numbers, as SETEXISTINGSYSMEMPAGES sends them.
    pub fn from_pfns(mem: AS, pfns: &[u64]) -> Result<Self> {
        let mut ranges = Vec::with_capacity(pfns.len());
        for &pfn in pfns {
            let gpa = pfn
                .checked_mul(GUEST_PAGE_SIZE)
                .ok_or(BackendError::param("page frame number", pfn))?;
            ranges.push((gpa, GUEST_PAGE_SIZE));
        }
        Self::new(mem, ranges)
    }

    /// Calls `f(guest address, range offset within buf, length)` for each
    /// piece of `[offset, offset + len)`.
    fn walk(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(GuestAddress, usize, usize) -> Result<()>,
    ) -> Result<()> {
        check(offset, len, self.len)?;
        if len == 0 {
            return Ok(());
        }
        // The last range starting at or before `offset`.
        let mut i = self.ranges.partition_point(|r| r.2 <= offset) - 1;
        let mut done = 0usize;
        while done < len {
            let (gpa, rlen, roff) = self.ranges[i];
            let pos = offset + done as u64 - roff;
            let n = ((rlen - pos) as usize).min(len - done);
            f(gpa.unchecked_add_offset(pos), done, n)?;
            done += n;
            i += 1;
        }
        Ok(())
    }
}

trait GuestAddressExt {
    fn unchecked_add_offset(self, off: u64) -> GuestAddress;
}

impl GuestAddressExt for GuestAddress {
    fn unchecked_add_offset(self, off: u64) -> GuestAddress {
        // Ranges were checked not to wrap when they were built.
        GuestAddress(self.0 + off)
    }
}

impl<AS> HostVisibleMemory for GuestRanges<AS>
where
    AS: GuestAddressSpace + Send + Sync,
    AS::T: Send + Sync + 'static,
{
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mem = self.mem.memory();
        self.walk(offset, buf.len(), |gpa, at, n| {
            mem.read_slice(&mut buf[at..at + n], gpa)
                .map_err(|e| BackendError::Memory {
                    offset: offset + at as u64,
                    message: e.to_string(),
                })
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mem = self.mem.memory();
        self.walk(offset, data.len(), |gpa, at, n| {
            mem.write_slice(&data[at..at + n], gpa)
                .map_err(|e| BackendError::Memory {
                    offset: offset + at as u64,
                    message: e.to_string(),
                })
        })
    }

    fn host_spans(&self, offset: u64, len: u64) -> Option<Vec<HostSpan>> {
        let len = usize::try_from(len).ok()?;
        let mem = self.mem.memory();
        // One holder for every span: the snapshot keeps all its regions.
        let keep: Arc<dyn Any + Send + Sync> = Arc::new(mem.clone());
        // Behind an IOMMU the guest's addresses are not physical: no spans.
        let phys = mem.physical_memory()?;
        let mut spans: Vec<HostSpan> = Vec::new();
        let walked = self.walk(offset, len, |gpa, at, n| {
            let (region, addr) = phys.to_region_addr(gpa).ok_or(BackendError::Memory {
                offset: offset + at as u64,
                message: "not guest RAM".into(),
            })?;
            // Bounds-checked by vm-memory: the piece must lie in the region.
            let end = addr.0.checked_add(n as u64).filter(|&e| e <= region.len());
            let base = region.get_host_address(MemoryRegionAddress(0));
            match (end, base) {
                (Some(_), Ok(base)) => {
                    spans.push(HostSpan {
                        offset: offset + at as u64,
                        len: n as u64,
                        region: HostRegion {
                            base: base as usize,
                            len: region.len(),
                            keep: keep.clone(),
                        },
                        region_offset: addr.0,
                    });
                    Ok(())
                }
                _ => Err(BackendError::Memory {
                    offset: offset + at as u64,
                    message: "range crosses a guest RAM region".into(),
                }),
            }
        });
        walked.ok().map(|()| spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn guest() -> Arc<GuestMemoryMmap> {
        Arc::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 * GUEST_PAGE_SIZE as usize)])
                .unwrap(),
        )
    }

    #[test]
    fn scattered_pages_read_back_in_list_order() {
        let g = guest();
        let r = GuestRanges::from_pfns(g.clone(), &[3, 1, 2]).unwrap();
        assert_eq!(r.len(), 3 * GUEST_PAGE_SIZE);
        let data: Vec<u8> = (0..r.len()).map(|i| (i / 7) as u8).collect();
        r.write_at(0, &data).unwrap();
        // Page 1 of the list is guest frame 1, which holds list bytes 4096..8192.
        let mut frame1 = vec![0; 4096];
        g.read_slice(&mut frame1, GuestAddress(GUEST_PAGE_SIZE))
            .unwrap();
        assert_eq!(frame1, data[4096..8192]);
        let mut back = vec![0; 5000];
        r.read_at(3000, &mut back).unwrap();
        assert_eq!(back, data[3000..8000]);
    }

    #[test]
    fn contiguous_frames_merge() {
        let g = guest();
        let r = GuestRanges::from_pfns(g.clone(), &[4, 5, 6, 9]).unwrap();
        assert_eq!(r.ranges.len(), 2);
    }

    #[test]
    fn out_of_range_and_unbacked_are_errors() {
        let g = guest();
        let r = GuestRanges::from_pfns(g.clone(), &[1]).unwrap();
        let mut b = [0u8; 8];
        assert!(matches!(
            r.read_at(4093, &mut b),
            Err(BackendError::OutOfRange { .. })
        ));
        assert!(r.read_at(u64::MAX, &mut b).is_err());
        let far = GuestRanges::from_pfns(g.clone(), &[1 << 30]).unwrap();
        assert!(matches!(
            far.write_at(0, &b),
            Err(BackendError::Memory { .. })
        ));
        assert!(GuestRanges::from_pfns(g.clone(), &[u64::MAX]).is_err());
    }

    #[test]
    fn host_spans_follow_the_page_list() {
        let g = guest();
        let r = GuestRanges::from_pfns(g.clone(), &[4, 5, 2]).unwrap();
        let spans = r.host_spans(0, r.len()).unwrap();
        let got: Vec<(u64, u64, u64)> = spans
            .iter()
            .map(|s| (s.offset, s.len, s.region_offset))
            .collect();
        assert_eq!(got, [(0, 8192, 4 * 4096), (8192, 4096, 2 * 4096)]);
        // The region's host address reaches the same bytes as vm-memory.
        g.write_slice(&[0xab; 4], GuestAddress(2 * 4096 + 12))
            .unwrap();
        let mut b = [0u8; 4];
        r.read_at(8192 + 12, &mut b).unwrap();
        assert_eq!(b, [0xab; 4]);
        let region = &spans[1].region;
        assert_eq!(region.len, 16 * GUEST_PAGE_SIZE);
        // A piece from the middle, and nothing for what is not all RAM.
        let mid = r.host_spans(4000, 200).unwrap();
        assert_eq!(mid[0].region_offset, 4 * 4096 + 4000);
        assert!(r.host_spans(0, r.len() + 1).is_none());
        let far = GuestRanges::from_pfns(g.clone(), &[1 << 30]).unwrap();
        assert!(far.host_spans(0, 4096).is_none());
        assert!(VecMemory::new(16).host_spans(0, 16).is_none());
    }

    #[test]
    fn vec_memory_checks_bounds() {
        let m = VecMemory::new(16);
        m.write_at(8, &[1; 8]).unwrap();
        assert!(m.write_at(9, &[1; 8]).is_err());
        assert_eq!(m.to_vec()[8..], [1; 8]);
    }
}
