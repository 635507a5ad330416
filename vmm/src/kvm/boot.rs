//! Loading the guest kernel and initramfs and writing what the kernel reads
//! at entry: the Linux zero page (64-bit boot protocol) or the PVH
//! start_info (a vmlinux with a PVH entry note).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout;

/// Errors in preparing the guest's boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot read kernel {0}: {1}")]
    KernelIo(PathBuf, io::Error),
    #[error("kernel {0} is neither a bzImage nor an ELF vmlinux")]
    KernelFormat(PathBuf),
    #[error("kernel {0} is a 32-bit-only bzImage; dxvmm boots 64-bit kernels")]
    Kernel32(PathBuf),
    #[error("cannot load kernel {0}: {1} (is the guest memory large enough?)")]
    KernelLoad(PathBuf, String),
    #[error("cannot read initramfs {0}: {1}")]
    InitramfsIo(PathBuf, io::Error),
    #[error("guest memory of {mib} MiB is too small for the kernel and an initramfs of {initrd_mib} MiB")]
    NoRoomForInitramfs { mib: u64, initrd_mib: u64 },
    #[error("the kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("cannot write boot data to guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 64-bit Linux boot protocol: long mode, RSI = zero page.
    Linux64(u64),
    /// PVH: 32-bit protected mode without paging, EBX = start_info.
    Pvh(u64),
}

/// A kernel in guest memory.
#[derive(Debug)]
pub struct Kernel {
    pub entry: Entry,
    /// First byte past the kernel, its decompression room included.
    pub end: u64,
    header: Option<linux_loader::loader::bootparam::setup_header>,
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";
/// setup_header.xloadflags: the kernel has a 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1;
/// Protocol 2.06 added cmdline_size; older kernels take 255 bytes.
const OLD_CMDLINE_MAX: usize = 255;

/// Loads the kernel at `path`, whichever of the two formats it is.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<Kernel, BootError> {
    let io_err = |e| BootError::KernelIo(path.to_path_buf(), e);
    let mut file = File::open(path).map_err(io_err)?;
    let mut head = [0u8; 0x210];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(io_err)? {
            0 => break,
            k => n += k,
        }
    }
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let load_err =
        |e: linux_loader::loader::Error| BootError::KernelLoad(path.to_path_buf(), e.to_string());
    if n >= 4 && &head[..4] == ELF_MAGIC {
        let r = Elf::load(
            mem,
            None,
            &mut file,
            Some(GuestAddress(layout::HIMEM_START)),
        )
        .map_err(load_err)?;
        let entry = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => Entry::Pvh(addr.0),
            _ => Entry::Linux64(r.kernel_load.0),
        };
        return Ok(Kernel {
            entry,
            end: r.kernel_end,
            header: None,
        });
    }
    if n >= BZIMAGE_MAGIC_OFFSET + 4
        && &head[BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + 4] == BZIMAGE_MAGIC
    {
        let r = BzImage::load(
            mem,
            None,
            &mut file,
            Some(GuestAddress(layout::HIMEM_START)),
        )
        .map_err(load_err)?;
        let hdr = r
            .setup_header
            .ok_or_else(|| BootError::KernelFormat(path.to_path_buf()))?;
        if hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BootError::Kernel32(path.to_path_buf()));
        }
        // The kernel decompresses in place and needs init_size bytes from
        // its load address (boot protocol 2.10+).
        let end = r.kernel_load.0 + (hdr.init_size as u64).max(r.kernel_end - r.kernel_load.0);
        return Ok(Kernel {
            entry: Entry::Linux64(r.kernel_load.0 + 0x200),
            end,
            header: Some(hdr),
        });
    }
    Err(BootError::KernelFormat(path.to_path_buf()))
}

/// Places the initramfs at the top of low RAM (below what the kernel can
/// address), above the kernel. Returns its address and size.
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    mem_size: u64,
    kernel: &Kernel,
) -> Result<(u64, u64), BootError> {
    let io_err = |e| BootError::InitramfsIo(path.to_path_buf(), e);
    let mut file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    let max_end = match kernel.header {
        Some(h) if h.initrd_addr_max != 0 => (h.initrd_addr_max as u64).saturating_add(1),
        _ => u64::MAX,
    };
    let top = layout::low_ram_end(mem_size).min(max_end);
    let too_small = || BootError::NoRoomForInitramfs {
        mib: mem_size >> 20,
        initrd_mib: size.div_ceil(1 << 20),
    };
    let addr = top.checked_sub(size).ok_or_else(too_small)? & !0xfff;
    if addr < kernel.end {
        return Err(too_small());
    }
    let len = usize::try_from(size).map_err(|_| too_small())?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|e| BootError::InitramfsIo(path.to_path_buf(), io::Error::other(e.to_string())))?;
    Ok((addr, size))
}

/// Writes the command line; checks it against the kernel's own limit.
pub fn write_cmdline(
    mem: &GuestMemoryMmap,
    kernel: &Kernel,
    cmdline: &str,
) -> Result<(), BootError> {
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    let max = match kernel.header {
        Some(h) if h.version >= 0x206 => (h.cmdline_size as usize).min(layout::CMDLINE_MAX - 1),
        Some(_) => OLD_CMDLINE_MAX,
        None => layout::CMDLINE_MAX - 1,
    };
    if cmdline.len() > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(layout::CMDLINE_ADDR))?;
    Ok(())
}

/// What the kernel is told at entry besides the command line.
pub struct BootInfo {
    pub cmdline_len: usize,
    pub initramfs: Option<(u64, u64)>,
    pub mem_size: u64,
    pub rsdp_addr: u64,
}

/// The Linux zero page (Documentation/arch/x86/boot.rst).
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    kernel: &Kernel,
    info: &BootInfo,
) -> Result<(), BootError> {
    let mut p = boot_params::default();
    if let Some(h) = kernel.header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = 0xff; // "undefined" boot loader
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = 0x5372_6448; // "HdrS"
    p.hdr.cmd_line_ptr = layout::CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = info.cmdline_len as u32;
    if p.hdr.kernel_alignment == 0 {
        p.hdr.kernel_alignment = 0x100_0000;
    }
    if let Some((addr, size)) = info.initramfs {
        p.hdr.ramdisk_image = addr as u32;
        p.hdr.ramdisk_size = size as u32;
    }
    p.acpi_rsdp_addr = info.rsdp_addr;
    let map = layout::memory_map(info.mem_size);
    for (slot, e) in p.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    p.e820_entries = map.len().min(p.e820_table.len()) as u8;
    mem.write_obj(p, GuestAddress(layout::ZERO_PAGE_ADDR))?;
    Ok(())
}

/// The PVH start_info, its module list (the initramfs) and memory map
/// (xen/include/public/arch-x86/hvm/start_info.h, version 1).
pub fn write_pvh_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), BootError> {
    const MAGIC: u32 = 0x336e_c578;
    let map = layout::memory_map(info.mem_size);
    let entries = map.len().min(layout::PVH_MEMMAP_MAX);
    let mut s = Vec::with_capacity(56);
    s.extend_from_slice(&MAGIC.to_le_bytes());
    s.extend_from_slice(&1u32.to_le_bytes()); // version
    s.extend_from_slice(&0u32.to_le_bytes()); // flags
    s.extend_from_slice(&(info.initramfs.is_some() as u32).to_le_bytes());
    s.extend_from_slice(&layout::PVH_MODLIST_ADDR.to_le_bytes());
    s.extend_from_slice(&layout::CMDLINE_ADDR.to_le_bytes());
    s.extend_from_slice(&info.rsdp_addr.to_le_bytes());
    s.extend_from_slice(&layout::PVH_MEMMAP_ADDR.to_le_bytes());
    s.extend_from_slice(&(entries as u32).to_le_bytes());
    s.extend_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&s, GuestAddress(layout::PVH_INFO_ADDR))?;
    if let Some((addr, size)) = info.initramfs {
        let mut m = Vec::with_capacity(32);
        m.extend_from_slice(&addr.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(&[0u8; 16]);
        mem.write_slice(&m, GuestAddress(layout::PVH_MODLIST_ADDR))?;
    }
    let mut mm = Vec::with_capacity(entries * 24);
    for e in &map[..entries] {
        mm.extend_from_slice(&e.addr.to_le_bytes());
        mm.extend_from_slice(&e.size.to_le_bytes());
        mm.extend_from_slice(&e.kind.to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
    }
    mem.write_slice(&mm, GuestAddress(layout::PVH_MEMMAP_ADDR))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const MIB: u64 = 1 << 20;

    fn mem(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&layout::ram_regions(size)).unwrap()
    }

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("dxvmm-boot-{}-{name}", std::process::id()));
        File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    /// A minimal ELF64 executable: one PT_LOAD of `code` at `addr`.
    pub(crate) fn tiny_elf(addr: u64, code: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 64 + 56];
        e[..4].copy_from_slice(ELF_MAGIC);
        e[4] = 2; // 64-bit
        e[5] = 1; // little endian
        e[6] = 1;
        e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        e[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        e[20..24].copy_from_slice(&1u32.to_le_bytes());
        e[24..32].copy_from_slice(&addr.to_le_bytes()); // entry
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
        e[52..54].copy_from_slice(&64u16.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut e[64..];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        ph[4..8].copy_from_slice(&5u32.to_le_bytes());
        ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // offset
        ph[16..24].copy_from_slice(&addr.to_le_bytes());
        ph[24..32].copy_from_slice(&addr.to_le_bytes());
        ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        ph[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e.extend_from_slice(code);
        e
    }

    #[test]
    fn elf_kernel_enters_at_its_entry_point() {
        let m = mem(64 * MIB);
        let p = temp_file("elf", &tiny_elf(0x20_0000, &[0xf4; 16]));
        let k = load_kernel(&m, &p).unwrap();
        assert_eq!(k.entry, Entry::Linux64(0x20_0000));
        assert_eq!(k.end, 0x20_0010);
        let b: u8 = m.read_obj(GuestAddress(0x20_0000)).unwrap();
        assert_eq!(b, 0xf4);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn other_files_are_not_kernels() {
        let m = mem(64 * MIB);
        for (name, bytes) in [
            ("empty", &b""[..]),
            ("text", b"#!/bin/sh\necho hi\n"),
            ("zeros", &[0u8; 4096]),
        ] {
            let p = temp_file(name, bytes);
            let e = load_kernel(&m, &p).unwrap_err();
            assert!(matches!(e, BootError::KernelFormat(_)), "{name}: {e}");
            assert!(e.to_string().contains("neither a bzImage nor an ELF"));
            std::fs::remove_file(p).unwrap();
        }
        let e = load_kernel(&m, Path::new("/nonexistent/vmlinuz")).unwrap_err();
        assert!(matches!(e, BootError::KernelIo(..)));
    }

    #[test]
    fn elf_outside_memory_is_an_error() {
        let m = mem(64 * MIB);
        let p = temp_file("far", &tiny_elf(0x1_0000_0000, &[0xf4; 16]));
        assert!(matches!(
            load_kernel(&m, &p),
            Err(BootError::KernelLoad(..))
        ));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn initramfs_goes_to_the_top_of_low_memory() {
        let m = mem(64 * MIB);
        let k = Kernel {
            entry: Entry::Linux64(0x20_0000),
            end: 0x40_0000,
            header: None,
        };
        let p = temp_file("initrd", &[0x5a; 5000]);
        let (addr, size) = load_initramfs(&m, &p, 64 * MIB, &k).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(addr & 0xfff, 0);
        assert!(addr + size <= 64 * MIB && addr + size > 64 * MIB - 0x2000);
        let b: u8 = m.read_obj(GuestAddress(addr + 4999)).unwrap();
        assert_eq!(b, 0x5a);
        // A kernel that fills memory leaves no room.
        let big = Kernel {
            end: 64 * MIB - 0x1000,
            ..k
        };
        let e = load_initramfs(&m, &p, 64 * MIB, &big).unwrap_err();
        assert!(matches!(e, BootError::NoRoomForInitramfs { .. }), "{e}");
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(
            load_initramfs(&m, Path::new("/nonexistent/initrd"), 64 * MIB, &k),
            Err(BootError::InitramfsIo(..))
        ));
    }

    #[test]
    fn zero_page_has_cmdline_initrd_e820_and_rsdp() {
        let m = mem(256 * MIB);
        let k = Kernel {
            entry: Entry::Linux64(0x20_0000),
            end: 0x40_0000,
            header: None,
        };
        write_cmdline(&m, &k, "console=ttyS0 quiet").unwrap();
        let info = BootInfo {
            cmdline_len: 19,
            initramfs: Some((0x800_0000, 0x1234)),
            mem_size: 256 * MIB,
            rsdp_addr: layout::ACPI_ADDR,
        };
        write_boot_params(&m, &k, &info).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(layout::ZERO_PAGE_ADDR)).unwrap();
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        assert_eq!({ p.hdr.header }, 0x5372_6448);
        assert_eq!({ p.hdr.cmd_line_ptr }, layout::CMDLINE_ADDR as u32);
        assert_eq!({ p.hdr.ramdisk_image }, 0x800_0000);
        assert_eq!({ p.hdr.ramdisk_size }, 0x1234);
        assert_eq!({ p.acpi_rsdp_addr }, layout::ACPI_ADDR);
        assert_eq!(p.e820_entries, 3);
        let e = p.e820_table[2];
        assert_eq!(
            ({ e.addr }, { e.size }, { e.r#type }),
            (layout::HIMEM_START, 255 * MIB, 1)
        );
        let mut cmd = [0u8; 20];
        m.read_slice(&mut cmd, GuestAddress(layout::CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&cmd, b"console=ttyS0 quiet\0");
    }

    #[test]
    fn cmdline_limits() {
        let m = mem(64 * MIB);
        let mut hdr = linux_loader::loader::bootparam::setup_header {
            version: 0x20f,
            cmdline_size: 2047,
            ..Default::default()
        };
        let k = Kernel {
            entry: Entry::Linux64(0x20_0200),
            end: 0x40_0000,
            header: Some(hdr),
        };
        write_cmdline(&m, &k, &"x".repeat(2047)).unwrap();
        let e = write_cmdline(&m, &k, &"x".repeat(2048)).unwrap_err();
        assert!(e.to_string().contains("at most 2047"), "{e}");
        assert!(matches!(
            write_cmdline(&m, &k, "a\0b"),
            Err(BootError::CmdlineNul)
        ));
        hdr.version = 0x205;
        let old = Kernel {
            header: Some(hdr),
            ..k
        };
        assert!(write_cmdline(&m, &old, &"x".repeat(256)).is_err());
    }

    #[test]
    fn pvh_start_info() {
        let m = mem(128 * MIB);
        let info = BootInfo {
            cmdline_len: 5,
            initramfs: Some((0x600_0000, 0x1000)),
            mem_size: 128 * MIB,
            rsdp_addr: layout::ACPI_ADDR,
        };
        write_pvh_info(&m, &info).unwrap();
        let r32 = |a: u64| m.read_obj::<u32>(GuestAddress(a)).unwrap();
        let r64 = |a: u64| m.read_obj::<u64>(GuestAddress(a)).unwrap();
        let s = layout::PVH_INFO_ADDR;
        assert_eq!(r32(s), 0x336e_c578);
        assert_eq!(r32(s + 4), 1);
        assert_eq!(r32(s + 12), 1);
        assert_eq!(r64(s + 16), layout::PVH_MODLIST_ADDR);
        assert_eq!(r64(s + 24), layout::CMDLINE_ADDR);
        assert_eq!(r64(s + 32), layout::ACPI_ADDR);
        assert_eq!(r32(s + 48), 3);
        assert_eq!(r64(layout::PVH_MODLIST_ADDR), 0x600_0000);
        assert_eq!(r64(layout::PVH_MODLIST_ADDR + 8), 0x1000);
        assert_eq!(r64(layout::PVH_MEMMAP_ADDR + 48), layout::HIMEM_START);
        assert_eq!(r32(layout::PVH_MEMMAP_ADDR + 24 + 16), 2);
    }
}
