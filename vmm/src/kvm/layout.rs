//! Guest-physical memory map of a KVM guest.
//!
//! ```text
//! 0x0000_0500  GDT (boot segments)          0x0000_9000  PML4
//! 0x0000_0520  IDT (empty)                  0x0000_a000  PDPT
//! 0x0000_6000  PVH start_info + memmap      0x0000_b000  4 page directories (identity map of 4 GiB)
//! 0x0000_7000  Linux zero page              0x0002_0000  kernel command line
//! 0x0000_8ff0  boot stack (grows down)      0x0009_fc00  EBDA .. 1 MiB: reserved, ACPI tables at 0xe_0000
//! 0x0010_0000  kernel                       ... RAM ...   initramfs at the top of low RAM
//! 0xd000_0000  virtio-mmio windows, 4 KiB each (MMIO gap up to 4 GiB)
//! 0xfec0_0000  IOAPIC                       0xfee0_0000  LAPIC
//! 0x1_0000_0000  RAM above the gap, when the guest has more than 3.25 GiB
//! ```

use vm_memory::GuestAddress;

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const PVH_INFO_ADDR: u64 = 0x6000;
/// After start_info (56 bytes) and one module entry (32 bytes).
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
pub const PVH_MEMMAP_ADDR: u64 = 0x6080;
/// Room for the PVH memory map up to the zero page.
pub const PVH_MEMMAP_MAX: usize = (ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) as usize / 24;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Gigabytes the boot page tables identity-map (the MMIO gap included, so
/// that a 64-bit test guest reaches its devices).
pub const IDENTITY_MAPPED_GIB: u64 = 4;
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Our limit; the kernel's own (setup_header.cmdline_size) may be smaller.
pub const CMDLINE_MAX: usize = 0x1_0000;
/// Start of the Extended BIOS Data Area: usable RAM below 1 MiB ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables, where a legacy scan for the RSDP would find them too.
pub const ACPI_ADDR: u64 = 0xe0000;
pub const ACPI_MAX: usize = 0x20000;
pub const HIMEM_START: u64 = 0x10_0000;

pub const MMIO_GAP_START: u64 = 0xd000_0000;
pub const MMIO_GAP_END: u64 = 1 << 32;
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// KVM needs three pages for the TSS and one for the identity map of real
/// mode on Intel; placed just below the IOAPIC, inside the gap.
pub const KVM_TSS_ADDR: u64 = 0xfffb_d000;
pub const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

/// Legacy IRQ of COM1.
pub const COM1_GSI: u32 = 4;
pub const COM1_PORT: u16 = 0x3f8;
/// i8042 data and command ports (only the reset command is served).
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_CMD_PORT: u16 = 0x64;
/// ACPI hardware-reduced sleep control/status and reset registers.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x600;
pub const ACPI_SLEEP_STATUS_PORT: u16 = 0x601;
pub const ACPI_RESET_PORT: u16 = 0x604;
pub const ACPI_RESET_VALUE: u8 = 0x1;
/// SLP_TYP of S5 as the DSDT's \_S5_ declares it.
pub const ACPI_S5_SLP_TYP: u8 = 5;

/// GSIs given to virtio-mmio devices, in order: the IOAPIC's pins that no
/// legacy device (timer, keyboard, COM ports, RTC, SCI, mouse, IDE) claims.
pub const VIRTIO_GSIS: &[u32] = &[5, 6, 7, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23];

/// Guest-physical base of the `index`th virtio-mmio window.
pub fn virtio_mmio_addr(index: usize) -> u64 {
    VIRTIO_MMIO_BASE + index as u64 * virtio_mmio::MMIO_WINDOW_SIZE
}

/// RAM regions of a guest with `size` bytes of memory: below the MMIO gap,
/// and the rest above 4 GiB.
pub fn ram_regions(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_GAP_START);
    let mut regions = vec![(GuestAddress(0), low as usize)];
    if size > low {
        regions.push((GuestAddress(MMIO_GAP_END), (size - low) as usize));
    }
    regions
}

/// An e820 / PVH memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The memory map the guest is told about: RAM below the EBDA, the legacy
/// area (ACPI tables) reserved, RAM from 1 MiB, and RAM above 4 GiB.
pub fn memory_map(size: u64) -> Vec<MemEntry> {
    let low_end = size.min(MMIO_GAP_START);
    let mut map = vec![
        MemEntry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemEntry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
        MemEntry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        },
    ];
    if size > low_end {
        map.push(MemEntry {
            addr: MMIO_GAP_END,
            size: size - low_end,
            kind: E820_RAM,
        });
    }
    map
}

/// End of RAM below the MMIO gap.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_guest_is_one_region() {
        assert_eq!(
            ram_regions(512 * MIB),
            vec![(GuestAddress(0), (512 * MIB) as usize)]
        );
        let map = memory_map(512 * MIB);
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].addr + map[2].size, 512 * MIB);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let size = 4096 * MIB;
        let r = ram_regions(size);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1 as u64, MMIO_GAP_START);
        assert_eq!(r[1].0, GuestAddress(1 << 32));
        assert_eq!(r[0].1 as u64 + r[1].1 as u64, size);
        let map = memory_map(size);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // Only the legacy hole between the EBDA and 1 MiB is withheld.
        assert_eq!(ram, size - (HIMEM_START - EBDA_START));
        assert!(map
            .iter()
            .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
    }

    #[test]
    fn fixed_areas_do_not_overlap() {
        let areas = [
            (GDT_ADDR, 0x20),
            (IDT_ADDR, 0x8),
            (PVH_INFO_ADDR, 0x40),
            (PVH_MODLIST_ADDR, 0x20),
            (PVH_MEMMAP_ADDR, (PVH_MEMMAP_MAX * 24) as u64),
            (ZERO_PAGE_ADDR, 0x1000),
            (BOOT_STACK - 0x100, 0x100),
            (PML4_ADDR, 0x1000),
            (PDPT_ADDR, 0x1000),
            (PD_ADDR, 0x1000 * IDENTITY_MAPPED_GIB),
            (CMDLINE_ADDR, CMDLINE_MAX as u64),
            (ACPI_ADDR, ACPI_MAX as u64),
        ];
        for (i, a) in areas.iter().enumerate() {
            for b in &areas[i + 1..] {
                assert!(
                    a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0,
                    "{a:x?} overlaps {b:x?}"
                );
            }
        }
        assert!(CMDLINE_ADDR + CMDLINE_MAX as u64 <= EBDA_START);
        assert!(ACPI_ADDR + ACPI_MAX as u64 <= HIMEM_START);
        const { assert!(PVH_MEMMAP_MAX >= 8) };
    }

    #[test]
    fn virtio_windows_and_gsis_fit() {
        let last = virtio_mmio_addr(VIRTIO_GSIS.len() - 1);
        assert!(last + virtio_mmio::MMIO_WINDOW_SIZE <= IOAPIC_ADDR);
        assert!(!VIRTIO_GSIS.contains(&COM1_GSI));
        const { assert!(KVM_TSS_ADDR + 3 * 0x1000 <= MMIO_GAP_END) };
        const { assert!(KVM_IDENTITY_MAP_ADDR + 0x1000 <= KVM_TSS_ADDR) };
    }
}
